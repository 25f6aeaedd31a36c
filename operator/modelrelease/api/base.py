"""Shared pydantic base: camelCase on the wire, snake_case in Python, unknown fields rejected."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import durationpy
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


# Go's time.ParseDuration (what Kubernetes and Argo Rollouts read) knows no days or weeks; durationpy
# does, so those units are refused here to keep a spec valid in both.
_NOT_GO_UNITS = re.compile(r"\d(?:d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go/Kubernetes duration: "30s", "5m", "1h30m", "500ms", "1.5m", "2m30s"."""
    problem = f"{text!r} is not a duration; write it like 30s, 5m, 1h30m or 500ms"
    if not isinstance(text, str) or not text.strip() or _NOT_GO_UNITS.search(text):
        raise ValueError(problem)
    try:
        parsed = durationpy.from_str(text.strip())
    except durationpy.DurationError:
        raise ValueError(problem) from None
    if parsed < timedelta(0):
        raise ValueError(f"{text!r} is negative; a duration must be 0s or more")
    return parsed


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
