"""PromQL query templates: which variables exist, where they may stand, and safe rendering.

A template names variables as ``{{ name }}``. Values that come from the cluster (release, namespace,
model, version, track) may only stand inside a double-quoted PromQL string, where rendering escapes
them; so a crafted name can close no quote and add no selector. ``interval`` is ours (a duration we
format) and is the only variable allowed outside quotes, typically as a range: ``[{{ interval }}]``.

Deciding "inside a double-quoted string" needs a small lexer rather than counting quote marks: a ``"``
inside a single-quoted or backtick string, or inside a ``#`` comment, opens nothing, and treating it
as if it did would mark a bare variable as quoted. When the string is the right side of a regular
expression matcher (``=~`` or ``!~``) the value is also regex-escaped, so that a name such as ``.*``
matches itself only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

STRING_VARIABLES = frozenset({"release", "namespace", "model", "version", "track"})
BARE_VARIABLES = frozenset({"interval"})
TEMPLATE_VARIABLES = STRING_VARIABLES | BARE_VARIABLES

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_REGEX_MATCHER_BEFORE = re.compile(r"[=!]~\s*$")

Context = Literal["code", "double", "single", "raw", "comment"]
"""Where a placeholder stands: bare PromQL, a "..." string, a '...' string, a `...` string, a comment."""


@dataclass(frozen=True)
class Placeholder:
    name: str
    start: int
    end: int
    quoted: bool
    """Inside a double-quoted string: the only place a string value may be rendered."""
    context: Context = "code"
    regex: bool = False
    """The string is the pattern of a =~ or !~ matcher."""


@dataclass
class _Scan:
    holders: list[Placeholder]
    stray_braces: list[int]
    """Offsets of '{{' that do not start a variable (e.g. after a backslash escape)."""


def _scan(template: str) -> _Scan:
    holders: list[Placeholder] = []
    starts: set[int] = set()
    context: Context = "code"
    regex = False
    index = 0
    while index < len(template):
        match = _PLACEHOLDER.match(template, index)
        if match:
            quoted = context == "double"
            holders.append(
                Placeholder(match.group(1), match.start(), match.end(), quoted, context, quoted and regex)
            )
            starts.add(match.start())
            index = match.end()
            continue
        char = template[index]
        if context == "code":
            if char == '"':
                context, regex = "double", bool(_REGEX_MATCHER_BEFORE.search(template, 0, index))
            elif char == "'":
                context = "single"
            elif char == "`":
                context = "raw"
            elif char == "#":
                context = "comment"
        elif context in ("double", "single"):
            if char == "\\":
                index += 2  # an escaped character never ends the string
                continue
            if char == ('"' if context == "double" else "'"):
                context = "code"
        elif context == "raw":
            if char == "`":
                context = "code"
        elif char == "\n":  # a comment runs to the end of its line
            context = "code"
        index += 1
    strays = [m.start() for m in re.finditer(r"(?=\{\{)", template) if m.start() not in starts]
    # "{{{ x }}" has a stray "{{" at 0 only because the variable starts at 1; that is still a mistake.
    return _Scan(holders, strays)


def placeholders(template: str) -> list[Placeholder]:
    """Every ``{{ name }}`` in the template and where it stands."""
    return _scan(template).holders


def template_errors(template: str) -> list[str]:
    """Plain-language problems with a template; empty when it can be rendered safely."""
    errors: list[str] = []
    known = ", ".join(sorted(TEMPLATE_VARIABLES))
    scan = _scan(template)
    for holder in scan.holders:
        if holder.name not in TEMPLATE_VARIABLES:
            errors.append(f"unknown variable {{{{ {holder.name} }}}}; the variables are {known}")
        elif holder.name in STRING_VARIABLES and not holder.quoted:
            errors.append(
                f"{{{{ {holder.name} }}}} must stand inside double quotes, "
                f'e.g. {holder.name}="{{{{ {holder.name} }}}}"'
            )
        elif holder.name in BARE_VARIABLES and holder.context != "code":
            errors.append(f"{{{{ {holder.name} }}}} must stand outside quotes, e.g. [{{{{ {holder.name} }}}}]")
    if scan.stray_braces:
        errors.append("a '{{' does not open a variable; write variables as {{ name }}")
    return errors


_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def escape_regex(value: str) -> str:
    """Make a value match itself literally in an RE2 pattern (Prometheus' regex dialect)."""
    return "".join("\\" + char if char in _REGEX_SPECIAL else char for char in value)


_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if char == "\ufffd" or 0xD800 <= code <= 0xDFFF:
        # Prometheus' lexer rejects a literal U+FFFD as invalid UTF-8, and a lone surrogate cannot be
        # sent at all; both travel as the escaped replacement character.
        return "\\ufffd"
    return char


def escape_string_content(value: str) -> str:
    """Escape a value for the inside of a double-quoted PromQL string."""
    return "".join(_escape_char(char) for char in value)


def format_range(seconds: float) -> str:
    """A PromQL range duration for an interval, e.g. 30 -> "30s", 0.5 -> "500ms"."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a range must be positive, not {seconds!r} seconds")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a template that passed ``template_errors``; string values are escaped."""
    errors = template_errors(template)
    if errors:
        raise ValueError("; ".join(errors))
    out: list[str] = []
    cursor = 0
    for holder in placeholders(template):
        out.append(template[cursor : holder.start])
        if holder.name not in values:
            raise ValueError(f"no value for {{{{ {holder.name} }}}}")
        value = values[holder.name]
        if holder.regex:
            value = escape_regex(value)
        out.append(escape_string_content(value) if holder.quoted else value)
        cursor = holder.end
    out.append(template[cursor:])
    return "".join(out)
