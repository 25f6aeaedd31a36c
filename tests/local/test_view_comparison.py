"""The live view of a release whose checks compare the canary with the stable, or only watch (dry run)."""
from typing import Any

from rich.console import Console
from rich.table import Table

from modelrelease_local.view import _checks, check_label, comparison_cells, render, score_text

PROPORTIONS = {'test': 'proportions', 'statistic': -0.4, 'pValue': 0.34, 'alpha': 0.0061, 'effect': -0.012,
               'canarySamples': 80, 'stableSamples': 240, 'neededSamples': 66}
MANN_WHITNEY = {'test': 'mann-whitney', 'statistic': 12.0, 'pValue': 0.0004, 'alpha': 0.0015, 'effect': -0.231,
                'canarySamples': 24, 'stableSamples': 24, 'neededSamples': 8}


def release(checks: list[dict[str, Any]], score: float | None = None) -> dict[str, Any]:
    analysis: dict[str, Any] = {'runs': 4, 'failures': 0, 'checks': checks}
    if score is not None:
        analysis['score'] = score
    status = {'phase': 'Progressing', 'canaryWeight': 25, 'analysis': analysis}
    return {'metadata': {'name': 'digits'}, 'status': status}


def text_of(renderable: Any, width: int = 220) -> str:
    console = Console(record=True, width=width)
    console.print(renderable)
    return console.export_text()


def test_comparison_cells_say_p_value_against_alpha_the_effect_in_its_unit_and_the_samples() -> None:
    assert comparison_cells(PROPORTIONS) == ('0.34 >= alpha 0.0061', '-1.2 pts', '80/240, need 66')
    assert comparison_cells(MANN_WHITNEY) == ('0.0004 < alpha 0.0015', '-23.1%', '24/24, need 8')
    waiting = {'test': 'mann-whitney', 'alpha': 0.006, 'canarySamples': 3, 'stableSamples': 4, 'neededSamples': 7}
    assert comparison_cells(waiting) == ('not tested (alpha 0.006)', '-', '3/4, need 7')
    assert comparison_cells(None) == ('-', '-', '-')


def test_the_checks_table_shows_comparisons_and_greys_dry_run_checks() -> None:
    checks = [
        {'name': 'error-rate', 'verdict': 'Pass', 'value': 0.0, 'bound': '<= 0.02', 'reason': 'within bounds'},
        {'name': 'online-accuracy', 'verdict': 'Inconclusive', 'bound': 'compare proportions decrease',
         'reason': 'no regression seen yet', 'comparison': PROPORTIONS},
        {'name': 'latency-vs-stable', 'verdict': 'Fail', 'bound': 'compare mann-whitney increase', 'dryRun': True,
         'reason': 'canary higher than stable', 'comparison': MANN_WHITNEY},
    ]
    table = _checks(release(checks, score=50.0))
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == ['check', 'verdict', 'canary', 'stable', 'bound', 'p-value',
                                                 'effect', 'samples', 'reason']
    assert [row.style for row in table.rows] == [None, None, 'dim']  # the dry run is greyed, the others are not
    text = text_of(table)
    assert 'analysis: 4 runs, 0 failed, score 50/100' in text
    assert 'latency-vs-stable (dry run)' in text and '0.0004 < alpha 0.0015' in text and '-23.1%' in text
    assert '0.34 >= alpha 0.0061' in text and '80/240, need 66' in text


def test_a_dry_run_verdict_keeps_no_verdict_colour() -> None:
    table = _checks(release([{'name': 'p99', 'verdict': 'Fail', 'dryRun': True, 'comparison': MANN_WHITNEY}]))
    assert isinstance(table, Table)
    verdict_cell = next(iter(table.columns[1].cells))
    assert verdict_cell.style == 'dim'  # a red Fail would read as a failing release


def test_without_comparisons_the_table_keeps_its_columns_and_no_score() -> None:
    table = _checks(release([{'name': 'error-rate', 'verdict': 'Pass', 'value': 0.01, 'bound': '<= 0.02'}]))
    assert isinstance(table, Table)
    assert [c.header for c in table.columns] == ['check', 'verdict', 'canary', 'stable', 'bound', 'reason']
    assert 'score' not in text_of(table)
    assert score_text({}) is None and score_text({'score': 66.66}) == '67/100'


def test_the_whole_frame_carries_the_comparison() -> None:
    frame = render(release([{'name': 'confidence', 'verdict': 'Pass', 'bound': 'compare mann-whitney decrease',
                             'comparison': MANN_WHITNEY}], score=100.0), elapsed=3.0)
    text = text_of(frame)
    assert 'score 100/100' in text and '24/24, need 8' in text
    assert check_label({'name': 'x', 'dryRun': False}) == 'x'
