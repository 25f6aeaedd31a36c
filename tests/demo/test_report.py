"""The demo's report: a PNG chart, the final ModelRelease as YAML, the timeline; the summary and live view."""
import copy
import json
import pathlib
from typing import Any

import yaml
from rich.console import Console

from modelrelease_local.executor import TrainingProgress
from modelrelease_local.report import ReleaseRecorder, plotted_value, sample_of, summary_table, write_report
from modelrelease_local.traffic import TrafficStats
from modelrelease_local.view import render
from tests.demo.conftest import DEMO

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _release(phase: str, stage: str, weight: int, run: str | None, error_rate: float = 0.0,
             failure: dict[str, Any] | None = None) -> dict[str, Any]:
    release = copy.deepcopy(yaml.safe_load(DEMO.read_text()))
    release['metadata'].update(namespace='default', uid='u1')
    checks = [
        {'name': 'error-rate', 'verdict': 'Fail' if error_rate > 0.02 else 'Pass', 'value': error_rate,
         'bound': '<= 0.02', 'reason': ''},
        {'name': 'latency', 'verdict': 'Pass', 'value': 0.01, 'bound': '<= 1', 'reason': 'within bounds'},
        {'name': 'confidence', 'verdict': 'Inconclusive', 'value': None, 'stableValue': 0.9,
         'bound': 'canary/stable >= 0.9', 'reason': 'no data for the canary'},
        {'name': 'online-accuracy', 'verdict': 'Pass', 'value': 0.95, 'stableValue': 0.9,
         'bound': 'canary/stable >= 0.9', 'reason': 'within bounds'},
    ]
    release['status'] = {
        'phase': phase, 'currentStage': stage, 'canaryWeight': weight, 'message': f'{phase} at {weight}',
        'stable': {'name': 'warmup-aaaaaaaaaaaa'}, 'canary': {'name': f'{stage}-bbbbbbbbbbbb'},
        'analysis': {'lastRunAt': run, 'runs': 3, 'failures': int(error_rate > 0.02),
                     'checks': checks if run else []},
        'stages': [{'name': 'warmup', 'phase': 'Succeeded',
                    'version': {'name': 'warmup-aaaaaaaaaaaa', 'metrics': {'accuracy': 0.95}},
                    'gates': [{'metric': 'accuracy', 'bound': '>= 0.85', 'verdict': 'Pass'},
                              {'metric': 'f1', 'bound': 'drop <= 0.02', 'verdict': 'Skipped'}]}],
        'history': [{'name': 'warmup-aaaaaaaaaaaa'}],
    }
    if failure:
        release['status']['failure'] = failure
    return release


def _timeline() -> list[dict[str, Any]]:
    failure = {'reason': 'AnalysisFailed', 'message': 'check error-rate failed', 'check': 'error-rate',
               'value': 0.5, 'bound': '<= 0.02', 'at': 'T4'}
    return [
        _release('Training', 'warmup', 0, None),
        _release('Training', 'grow', 0, None),
        _release('Progressing', 'grow', 25, 'T1'),
        _release('Progressing', 'grow', 50, 'T2'),
        _release('Progressing', 'full', 50, 'T3', error_rate=0.4),
        _release('RolledBack', 'full', 0, 'T4', error_rate=0.5, failure=failure),
    ]


def test_the_report_has_a_png_chart_the_final_release_and_the_timeline(tmp_path: pathlib.Path) -> None:
    releases = iter(_timeline())
    recorder = ReleaseRecorder(lambda: next(releases, None))
    for _ in range(6):
        recorder.sample_now()
    final = recorder.latest
    assert final is not None and [s.weight for s in recorder.samples] == [0, 0, 25, 50, 50, 0]

    files = write_report(tmp_path / 'report', final, recorder.samples)

    chart = files['chart'].read_bytes()
    assert chart.startswith(PNG_MAGIC) and len(chart) > 10_000
    written = yaml.safe_load(files['release'].read_text())
    assert written['kind'] == 'ModelRelease' and written['status']['phase'] == 'RolledBack'
    assert written['status']['failure']['check'] == 'error-rate'
    timeline = json.loads(files['timeline'].read_text())
    assert [t['stage'] for t in timeline] == ['warmup', 'grow', 'grow', 'grow', 'full', 'full']
    assert timeline[-1]['checks'][0] == {'name': 'error-rate', 'verdict': 'Fail', 'value': 0.5,
                                         'stable_value': None, 'bound': '<= 0.02', 'reason': '',
                                         'dry_run': False, 'comparison': None}


def test_relative_checks_are_charted_as_ratios() -> None:
    from modelrelease.core.analysis import Bounds

    sample = sample_of(_release('Progressing', 'grow', 25, 'T1'), 3.0)
    accuracy = next(c for c in sample.checks if c.name == 'online-accuracy')
    assert plotted_value(accuracy, Bounds(None, None, 0.9, None)) == 0.95 / 0.9
    error_rate = sample.checks[0]
    assert plotted_value(error_rate, Bounds(None, 0.02, None, None)) == 0.0


def test_summary_and_live_view_show_phase_checks_and_progress() -> None:
    final = _timeline()[-1]
    console = Console(record=True, width=140)
    console.print(summary_table(final, elapsed=12.0))
    console.print(render(final, elapsed=12.0,
                         progress=[TrainingProgress('default', 'digits-full-1', 3, 15, '14/14 - 0s - loss: 0.2')],
                         traffic=TrafficStats(requests={('digits', 'stable'): 10}, errors={}, feedback={}),
                         ready={'stable': 3, 'canary': 1}))
    text = console.export_text()
    assert 'RolledBack' in text and 'AnalysisFailed' in text
    assert 'error-rate' in text and '<= 0.02' in text and 'canary/stable >= 0.9' in text
    assert 'epoch 3/15' in text and 'digits/stable' in text and 'ready servers: stable 3, canary 1' in text
    assert '1 passed; f1 drop <= 0.02: Skipped' in text
    console = Console(record=True, width=100)
    console.print(render(None))
    assert 'waiting' in console.export_text()
