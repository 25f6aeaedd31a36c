"""The report of a release whose checks compare the canary with the stable: timeline, chart rows, summary."""
import copy
import json
import pathlib
from typing import Any

import pytest
import yaml
from matplotlib import pyplot
from rich.console import Console

from modelrelease_local.report import (
    ChartRow,
    _draw_comparison,
    chart_rows,
    plotted_p_value,
    sample_of,
    summary_table,
    write_report,
)

DEMO = pathlib.Path(__file__).resolve().parents[2] / 'examples' / 'digits-demo.yaml'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def comparison(p_value: float | None, alpha: float, effect: float | None, canary: int, needed: int,
               test: str = 'proportions') -> dict[str, Any]:
    record: dict[str, Any] = {'test': test, 'alpha': alpha, 'canarySamples': canary, 'stableSamples': 3 * canary,
                              'neededSamples': needed}
    if p_value is not None:
        record.update(pValue=p_value, effect=effect, statistic=-1.0)
    return record


def release(run: str, score: float | None, accuracy: dict[str, Any], verdict: str = 'Pass') -> dict[str, Any]:
    manifest = copy.deepcopy(yaml.safe_load(DEMO.read_text()))
    manifest['metadata'].update(namespace='default')
    checks = [
        {'name': 'error-rate', 'verdict': 'Pass', 'value': 0.0, 'bound': '<= 0.02', 'reason': 'within bounds'},
        {'name': 'online-accuracy', 'verdict': verdict, 'bound': 'compare proportions decrease',
         'reason': 'no regression', 'comparison': accuracy},
        {'name': 'latency-vs-stable', 'verdict': 'Fail', 'bound': 'compare mann-whitney increase', 'dryRun': True,
         'reason': 'canary higher', 'comparison': comparison(0.0, 0.006, 0.8, 20, 8, test='mann-whitney')},
    ]
    analysis: dict[str, Any] = {'lastRunAt': run, 'runs': 2, 'failures': 0, 'checks': checks}
    if score is not None:
        analysis['score'] = score
    manifest['status'] = {'phase': 'Progressing', 'currentStage': 'grow', 'canaryWeight': 25, 'analysis': analysis}
    return manifest


def timeline() -> list[dict[str, Any]]:
    return [
        release('T1', None, comparison(None, 0.006, None, 4, 10), verdict='Inconclusive'),
        release('T2', 100.0, comparison(0.41, 0.0015, -0.01, 60, 50)),
        release('T3', 50.0, comparison(1e-30, 0.0007, -0.25, 90, 55), verdict='Fail'),
    ]


def test_the_timeline_keeps_each_runs_comparison_dry_run_and_score(tmp_path: pathlib.Path) -> None:
    samples = [sample_of(r, float(i)) for i, r in enumerate(timeline())]
    files = write_report(tmp_path, timeline()[-1], samples)

    assert files['chart'].read_bytes().startswith(PNG_MAGIC)
    written = json.loads(files['timeline'].read_text())
    assert [s['score'] for s in written] == [None, 100.0, 50.0]
    accuracy = written[1]['checks'][1]
    assert accuracy['dry_run'] is False
    assert accuracy['comparison'] == {'test': 'proportions', 'p_value': 0.41, 'alpha': 0.0015, 'effect': -0.01,
                                      'statistic': -1.0, 'canary_samples': 60, 'stable_samples': 180,
                                      'needed_samples': 50}
    assert written[0]['checks'][1]['comparison']['p_value'] is None  # too few samples: not tested
    assert written[0]['checks'][2]['dry_run'] is True
    assert written[0]['checks'][0]['comparison'] is None


def test_each_compared_check_gets_a_comparison_row_and_a_value_row_only_with_bounds() -> None:
    rows = chart_rows(timeline()[-1], [])
    assert [(r.check, r.kind, r.dry_run) for r in rows] == [
        ('error-rate', 'value', False), ('latency', 'value', False), ('confidence', 'comparison', False),
        ('online-accuracy', 'comparison', False), ('latency-vs-stable', 'comparison', True)]
    accuracy = rows[3].compare
    assert accuracy is not None and accuracy.effect_floor == 0.2 and accuracy.direction == 'decrease'

    both = timeline()[-1]
    check = next(c for c in both['spec']['analysis']['checks'] if c['name'] == 'online-accuracy')
    check['minRatio'] = 0.8
    assert [r.kind for r in chart_rows(both, []) if r.check == 'online-accuracy'] == ['value', 'comparison']


def test_without_a_readable_spec_the_rows_come_from_what_was_recorded() -> None:
    broken = {**timeline()[-1], 'spec': {'stages': 'not a list'}}
    samples = [sample_of(r, 0.0) for r in timeline()]
    assert [(r.check, r.kind, r.dry_run) for r in chart_rows(broken, samples)] == [
        ('error-rate', 'value', False), ('latency-vs-stable', 'comparison', True),
        ('online-accuracy', 'comparison', False)]


def test_p_values_are_drawn_on_a_log_scale_against_each_runs_alpha() -> None:
    samples = [sample_of(r, 10.0 * i) for i, r in enumerate(timeline())]
    points = [next(c for c in s.checks if c.name == 'online-accuracy') for s in samples]
    assert [plotted_p_value(p) for p in points] == [None, 0.41, 1e-12]  # untested; as is; floored for the log axis

    row = next(r for r in chart_rows(timeline()[-1], []) if r.check == 'online-accuracy')
    figure, axis = pyplot.subplots()
    try:
        _draw_comparison(axis, row, samples, failing=True)
        assert axis.get_yscale() == 'log'
        p_line, alpha_line = axis.get_lines()
        assert list(p_line.get_ydata()) == [0.41, 1e-12]
        assert list(alpha_line.get_ydata()) == [0.006, 0.0015, 0.0007]  # alpha shrinks run by run
        assert 'failing' in axis.get_title(loc='left')
        twin = next(a for a in figure.axes if a is not axis)
        effect, floor = twin.get_lines()
        assert list(effect.get_ydata()) == pytest.approx([-1.0, -25.0])  # points of the rate
        assert list(floor.get_ydata()) == pytest.approx([-20.0, -20.0])  # minEffect 0.2 in the decreasing direction
        assert twin.get_ylabel() == 'effect (points)'
    finally:
        pyplot.close(figure)


def test_an_unparsed_comparison_row_still_draws_its_effect_in_percent() -> None:
    samples = [sample_of(r, 10.0 * i) for i, r in enumerate(timeline())]
    figure, axis = pyplot.subplots()
    try:
        _draw_comparison(axis, ChartRow('latency-vs-stable', 'comparison', dry_run=True), samples, failing=False)
        twin = next(a for a in figure.axes if a is not axis)
        assert twin.get_ylabel() == 'effect (%)' and list(twin.get_lines()[0].get_ydata()) == pytest.approx([80.0] * 3)
        assert len(twin.get_lines()) == 1  # no minEffect known without the spec
    finally:
        pyplot.close(figure)


def test_the_summary_shows_score_comparison_and_dry_run() -> None:
    console = Console(record=True, width=200)
    console.print(summary_table(timeline()[-1]))
    text = console.export_text()
    assert 'score' in text and '50/100' in text
    assert 'check online-accuracy' in text and 'p 1e-30 < alpha 0.0007, effect -25 pts, samples 90/270, need 55' in text
    assert 'check latency-vs-stable (dry run)' in text and 'effect +80.0%' in text


def test_dry_run_rows_are_greyed_and_labelled_in_the_chart(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[Any] = []
    monkeypatch.setattr(pyplot, 'close', figures.append)  # keep the figure to look at its axes
    samples = [sample_of(r, 10.0 * i) for i, r in enumerate(timeline())]
    write_report(tmp_path, timeline()[-1], samples)
    try:
        [figure] = [f for f in figures if not isinstance(f, str)]
        labelled = {axis.get_ylabel(): axis for axis in figure.axes}
        dry = labelled['latency-vs-stable\np-value\n(dry run)']
        assert dry.get_facecolor()[:3] != labelled['online-accuracy\np-value'].get_facecolor()[:3]
        assert not any('(dry run)' in label for label in labelled if 'latency-vs-stable' not in label)
        weight = labelled['canary weight %\nscore']
        [score] = [line for line in weight.get_lines() if line.get_label() == 'score']
        assert list(score.get_ydata()) == [100.0, 50.0]  # the runs' scores, beside the weight
    finally:
        monkeypatch.undo()
        pyplot.close('all')
