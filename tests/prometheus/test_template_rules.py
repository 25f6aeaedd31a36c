"""Where template variables may stand, and how values are escaped (pure; no Prometheus needed)."""

from __future__ import annotations

import pytest

from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import (
    escape_regex,
    escape_string_content,
    format_range,
    placeholders,
    render,
    template_errors,
)

GOOD = 'sum(rate(x{model="{{ model }}",version="{{version}}"}[{{ interval }}]))'


def test_a_good_template_and_every_preset_have_no_errors() -> None:
    assert template_errors(GOOD) == []
    for preset in PRESETS.values():
        assert template_errors(preset.query) == []
        assert template_errors(preset.sample_query) == []


def test_an_unknown_variable_is_named() -> None:
    [error] = template_errors('x{pod="{{ pod }}"}')
    assert error.startswith("unknown variable {{ pod }}")
    assert "interval" in error and "model" in error


def test_a_string_variable_outside_quotes_is_refused() -> None:
    assert template_errors("x{model={{ model }}}") == [
        '{{ model }} must stand inside double quotes, e.g. model="{{ model }}"'
    ]


def test_a_quoted_interval_is_refused() -> None:
    assert template_errors('x[5m] offset "{{ interval }}"') == [
        "{{ interval }} must stand outside quotes, e.g. [{{ interval }}]"
    ]


@pytest.mark.parametrize(
    "template",
    [
        "x{model='{{ model }}'}",  # single quotes: rendering would not escape a ' in the value
        "x{model=`{{ model }}`}",  # raw string: no escape can protect it
        "x{a='\"'} + {{ model }}",  # the double quote inside single quotes opens nothing
        "x{a=`\"`} + {{ model }}",
        'x # a comment with a " quote\n + {{ model }}',
        'x # "{{ model }}"',  # a variable in a comment is not inside a string either
    ],
)
def test_a_string_variable_counts_as_quoted_only_inside_double_quotes(template: str) -> None:
    assert any("must stand inside double quotes" in e for e in template_errors(template)), template


def test_quotes_inside_strings_and_comments_do_not_confuse_the_lexer() -> None:
    template = "x{a='\"', b=`\"`, c=\"\\\"\"} # \"\n + y{model=\"{{ model }}\"}[{{ interval }}]"
    assert template_errors(template) == []
    holders = {h.name: h for h in placeholders(template)}
    assert holders["model"].quoted and holders["model"].context == "double"
    assert holders["interval"].context == "code"


def test_stray_braces_are_refused() -> None:
    assert template_errors('x{a="{{ 1 }}"}') == ["a '{{' does not open a variable; write variables as {{ name }}"]
    assert template_errors('x{a="\\{{ model }}"}')  # an escaped brace hides the variable from rendering
    assert template_errors('x{a="{{{ model }}"}')


def test_rendering_escapes_string_values_and_leaves_the_interval_bare() -> None:
    rendered = render(GOOD, {"model": 'a"b\\c\nd', "version": "v", "interval": "30s"})
    assert rendered == 'sum(rate(x{model="a\\"b\\\\c\\nd",version="v"}[30s]))'


def test_rendering_refuses_a_bad_template_and_a_missing_value() -> None:
    with pytest.raises(ValueError, match="double quotes"):
        render("x{model={{ model }}}", {"model": "m"})
    with pytest.raises(ValueError, match="no value for"):
        render(GOOD, {"model": "m", "interval": "5s"})


def test_regex_matchers_get_literal_values() -> None:
    template = 'x{model=~"{{ model }}", track !~ "{{ track }}", version="{{ version }}"}'
    holders = {h.name: h for h in placeholders(template)}
    assert holders["model"].regex and holders["track"].regex and not holders["version"].regex
    rendered = render(template, {"model": "a.b|c", "track": "(x)*", "version": "1.0"})
    assert rendered == 'x{model=~"a\\\\.b\\\\|c", track !~ "\\\\(x\\\\)\\\\*", version="1.0"}'


def test_escaping_of_control_and_unrepresentable_characters() -> None:
    assert escape_string_content("\x00\x07\t\x7f") == "\\x00\\x07\\t\\x7f"
    assert escape_string_content("\ufffd\ud800") == "\\ufffd\\ufffd"
    assert escape_string_content("ünï ✓") == "ünï ✓"
    assert escape_regex("a.b*c") == "a\\.b\\*c"


def test_ranges() -> None:
    assert format_range(30) == "30s"
    assert format_range(0.5) == "500ms"
    assert format_range(90) == "90s"
    with pytest.raises(ValueError):
        format_range(0)
