"""Both demo scenarios, end to end on the embedded default, with shorter steps than the demo's."""
import io
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest
import yaml
from rich.console import Console

from modelrelease_local.demo import load_release, run_demo
from modelrelease_local.stack import StackSettings
from tests.demo.conftest import DEMO

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def short_release() -> dict[str, Any]:
    """The demo release with 10 s steps and an analysis every 5 s."""
    manifest = load_release(DEMO)
    stages = manifest['spec']['stages']
    stages[1]['steps'] = [{'weight': 25, 'duration': '10s'}, {'weight': 50, 'duration': '10s'}]
    stages[2]['steps'] = [{'weight': 50, 'duration': '10s'}, {'weight': 100, 'duration': '10s'}]
    analysis = manifest['spec']['analysis']
    # A busy machine starts servers slowly: runs without enough canary traffic yet must not pause it.
    analysis.update(interval='5s', minSampleCount=10, inconclusiveLimit=12)
    # Online accuracy from a dozen labels per 5 s run is noisy: a wider bound keeps a healthy canary passing.
    next(c for c in analysis['checks'] if c['name'] == 'online-accuracy')['minRatio'] = 0.8
    return manifest


def _assert_valid_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_the_release_is_trained_canaried_and_promoted(no_leftovers: pathlib.Path) -> None:
    output = io.StringIO()
    result = run_demo(short_release(), settings=StackSettings(state_dir=no_leftovers / 'state'),
                      report_dir=no_leftovers / 'report', console=Console(file=output, width=120), live=False)

    status = result.release['status']
    assert result.phase == 'Released', f"{status.get('message')}\n{output.getvalue()}"
    assert [v['stage'] for v in status['history']] == ['warmup', 'full']
    assert status['stable']['id'] == status['history'][-1]['id'] and status['stable']['stage'] == 'full'
    assert status['stable']['path'].startswith('/models/digits/')  # the operator saw cluster paths only
    assert [s['phase'] for s in status['stages']] == ['Succeeded', 'Succeeded', 'Succeeded']
    assert [s['version']['hyperparameters']['workers'] for s in status['stages']] == [1, 2, 1]
    assert status['canaryWeight'] == 0 and status.get('canary') is None
    _assert_valid_png(result.files['chart'])
    written = yaml.safe_load(result.files['release'].read_text())
    assert written['status']['phase'] == 'Released'
    assert 'Released' in output.getvalue()


def test_a_faulty_canary_is_rolled_back_from_the_command_line(no_leftovers: pathlib.Path) -> None:
    release_file = no_leftovers / 'release.yaml'
    release_file.write_text(yaml.safe_dump(short_release()))
    report = no_leftovers / 'report'
    command = [sys.executable, '-m', 'modelrelease_local', '--state-dir', str(no_leftovers / 'state'), 'demo',
               '--rollback', '--release', str(release_file), '--report', str(report), '--no-live']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, 'COLUMNS': '120'})
    try:
        output, _ = process.communicate(timeout=800)
    finally:
        if process.poll() is None:  # Ctrl-C, as a user would: the demo stops what it started
            os.killpg(process.pid, signal.SIGINT)
            process.communicate(timeout=60)
    text = output.decode(errors='replace')

    assert process.returncode == 0, text
    final = yaml.safe_load((report / 'modelrelease.yaml').read_text())
    status = final['status']
    assert status['phase'] == 'RolledBack'
    assert status['failure']['reason'] == 'AnalysisFailed' and status['failure']['check'] == 'error-rate'
    assert status['failure']['value'] > 0.02
    assert [v['stage'] for v in status['history']] == ['warmup']
    assert status['stable']['stage'] == 'warmup' and status['canaryWeight'] == 0
    _assert_valid_png(report / 'chart.png')
    assert 'error-rate' in text and 'RolledBack' in text
