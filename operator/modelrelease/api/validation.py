"""Turn pydantic's errors into messages that name the field as the user wrote it, and the fix."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelrelease.api.spec import ModelReleaseSpec


class InvalidSpecError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _field_path(loc: tuple[Any, ...]) -> str:
    path = "spec"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            path += f".{part}"
    return path


def _describe(error: Any) -> str:
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "is not a field of ModelRelease; check the spelling (fields are camelCase)"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}; got {error.get('input')!r}"
    return message


def parse_spec(raw: Any) -> ModelReleaseSpec:
    """Validate a spec as found in the resource; raise InvalidSpecError listing every problem."""
    if not isinstance(raw, dict):
        raise InvalidSpecError([f"spec must be an object, not {type(raw).__name__}"])
    try:
        return ModelReleaseSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_field_path(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise InvalidSpecError(problems) from None
