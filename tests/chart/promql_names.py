"""The metric names a PromQL expression reads, and whether the operator exports them.

A small lexer, enough for the chart's own alerts and dashboard: string literals, label matchers, range
and subquery brackets, grouping label lists and numbers are removed; what remains of the identifiers, less
functions (followed by "("), keywords and aggregation operators, are metric names.
"""

from __future__ import annotations

import re

from prometheus_client import Histogram

from modelrelease import metrics

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d[\w.]*")  # 0.99, 1e3, a duration after offset: 5m
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, rest = match.group(), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def histogram_names() -> set[str]:
    return {family.name for value in vars(metrics).values() if isinstance(value, Histogram)
            for family in value.describe()}


def unknown_metrics(names: set[str]) -> set[str]:
    """The names that are not series the operator exports (a histogram's _bucket, _sum and _count are)."""
    exported = set(metrics.METRIC_NAMES)
    histograms = histogram_names() & exported
    series = exported | {f"{name}{suffix}" for name in histograms for suffix in ("_bucket", "_sum", "_count")}
    return names - series
