"""Shared pydantic base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """A frozen model that reads and writes the camelCase names a Kubernetes user sees."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    def wire(self) -> dict:
        """The model as it appears in the resource: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> timedelta:
    """Parse Go-style durations as used across Kubernetes: "30s", "5m", "1h30m", "500ms"."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 5m, 1h30m or 500ms")
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration kept as the user wrote it (so the spec round-trips), validated on admission."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_label(max_length: int):
    def check(value: str) -> str:
        if len(value) > max_length or not _DNS_LABEL.match(value):
            raise ValueError(
                f"{value!r} must be lower-case letters, digits and '-', start and end with a letter "
                f"or digit, at most {max_length} characters (it becomes part of Kubernetes object names)"
            )
        return value

    return AfterValidator(check)
