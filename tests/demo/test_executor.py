"""The process executor runs the operator's real training Job as a local trainer process."""
import asyncio
import json
import os
import pathlib
import sys

import pytest

from modelrelease_local.executor import ProcessJobExecutor, run_command
from tests.demo.conftest import demo_spec, pod_of, trainer_job
from tests.waiting import async_wait_for


def _short_stages(epochs: int, data: str = 'sklearn:digits?fraction=0.3') -> list[dict]:
    return [{'name': 'warmup', 'training': {'data': data, 'epochs': epochs, 'optimizer': {'name': 'adam'}},
             'steps': [{'weight': 100}]}]


def test_commands_map_to_this_machine() -> None:
    python = '/opt/venv/bin/python'
    assert run_command({'args': ['train', '--stage', 'a']}, python) == [python, '-m', 'modelrelease_trainer',
                                                                        'train', '--stage', 'a']
    assert run_command({'command': ['python3', '-m', 'x'], 'args': ['y']}, python) == [python, '-m', 'x', 'y']
    assert run_command({'command': ['/usr/bin/python3.11', 'a.py']}, python) == [python, 'a.py']
    assert run_command({'command': ['sh', '-c', 'true']}, python) == ['sh', '-c', 'true']


async def test_a_real_training_run_reports_cluster_paths(tmp_path: pathlib.Path) -> None:
    spec = demo_spec(stages=_short_stages(epochs=2))
    job = trainer_job(spec, 'warmup', 'digits-warmup-0001')
    executor = ProcessJobExecutor(tmp_path / 'artifacts')

    outcome = await executor.start(job, pod_of(job))

    assert outcome.kind == 'succeeded', outcome.message
    result = json.loads(outcome.message or '')
    assert result['ok'] is True and result['stage'] == 'warmup'
    # The operator sees the path its pods would see; the files are in the local artifact root.
    assert result['artifactPath'] == '/models/digits/digits-warmup-0001'
    assert (tmp_path / 'artifacts' / 'digits' / 'digits-warmup-0001' / 'model.keras').is_file()
    log = (tmp_path / 'artifacts' / 'logs' / 'default_digits-warmup-0001-x1.log').read_text()
    assert 'Epoch 2/2' in log
    assert executor.running_pids() == []


async def test_bad_data_fails_with_the_trainer_exit_code_and_a_cluster_path(tmp_path: pathlib.Path) -> None:
    spec = demo_spec(stages=_short_stages(epochs=1, data='/models/nowhere/train.csv'))
    job = trainer_job(spec, 'warmup', 'digits-warmup-0002')

    outcome = await ProcessJobExecutor(tmp_path / 'artifacts').start(job, pod_of(job))

    assert outcome.kind == 'failed' and outcome.exit_code == 65
    result = json.loads(outcome.message or '')
    assert '/models/nowhere/train.csv' in result['error']
    assert str(tmp_path) not in (outcome.message or '')


async def test_without_a_termination_message_the_log_tail_is_the_message(tmp_path: pathlib.Path) -> None:
    spec = demo_spec(stages=_short_stages(epochs=1))
    job = trainer_job(spec, 'warmup', 'digits-warmup-0003')
    container = job['spec']['template']['spec']['containers'][0]
    container['command'] = ['python3', '-c', 'import os, sys; print("no luck in", os.environ["TMPDIR"] + "/x"); '
                            'sys.exit(3)']
    container['args'] = []

    outcome = await ProcessJobExecutor(tmp_path / 'artifacts').start(job, pod_of(job))

    assert outcome.kind == 'failed' and outcome.exit_code == 3
    assert outcome.message == 'no luck in /tmp/x'


async def test_a_missing_command_fails_the_pod(tmp_path: pathlib.Path) -> None:
    spec = demo_spec(stages=_short_stages(epochs=1))
    job = trainer_job(spec, 'warmup', 'digits-warmup-0004')
    job['spec']['template']['spec']['containers'][0]['command'] = ['/no/such/entrypoint']

    outcome = await ProcessJobExecutor(tmp_path / 'artifacts').start(job, pod_of(job))

    assert outcome.kind == 'failed' and outcome.exit_code == 127
    assert 'not found' in (outcome.message or '')


async def test_cancelling_kills_the_process_group(tmp_path: pathlib.Path) -> None:
    spec = demo_spec(stages=_short_stages(epochs=10000))
    job = trainer_job(spec, 'warmup', 'digits-warmup-0005')
    executor = ProcessJobExecutor(tmp_path / 'artifacts', python=sys.executable)
    task = asyncio.create_task(executor.start(job, pod_of(job)))
    try:
        progress = await async_wait_for(lambda: [p for p in executor.progress() if p.epoch >= 2],
                                        message='the trainer to reach epoch 2')
        assert progress[0].job == 'digits-warmup-0005' and progress[0].epochs == 10000
        pids = executor.running_pids()
        assert len(pids) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)
    assert executor.running_pids() == []


def test_the_interpreter_is_never_rewritten_even_under_a_mapped_prefix() -> None:
    from modelrelease_local.executor import local_command

    container = {'args': ['train', '--output', '/tmp/out']}
    command = local_command(container, '/tmp/checkout/.venv/bin/python', lambda arg: arg.replace('/tmp', '/scratch'))
    assert command == ['/tmp/checkout/.venv/bin/python', '-m', 'modelrelease_trainer', 'train', '--output',
                       '/scratch/out']
