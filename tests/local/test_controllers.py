"""The emulated Job and Deployment controllers, observed through the kubernetes client."""
from typing import Any

import kubernetes
import pytest

from modelrelease_local.outcomes import JobOutcome, ScriptedExecutor, ScriptedRollout
from tests.local.conftest import deployment_body, job_body
from tests.waiting import wait_for


def _finished_job(batch: kubernetes.client.BatchV1Api, name: str) -> Any:
    def finished() -> Any:
        job = batch.read_namespaced_job(name, 'ml')
        types = {c.type for c in job.status.conditions or [] if c.status == 'True'}
        return job if types & {'Complete', 'Failed'} else None
    return wait_for(finished, message=f'the job {name} to finish')


def _pods(core: kubernetes.client.CoreV1Api, job: str) -> list[Any]:
    pods: list[Any] = core.list_namespaced_pod('ml', label_selector=f'job-name={job}').items
    return sorted(pods, key=lambda pod: pod.metadata.creation_timestamp)


def _conditions(job: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in job.status.conditions}


def test_success_with_a_termination_message(batch: kubernetes.client.BatchV1Api, core: kubernetes.client.CoreV1Api,
                                            outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.succeeded('{"accuracy": 0.93}', delay=0.1)
    created = batch.create_namespaced_job('ml', job_body('train'))
    job = _finished_job(batch, 'train')
    assert _conditions(job) == {'SuccessCriteriaMet': ('True', 'CompletionsReached'),
                                'Complete': ('True', 'CompletionsReached')}
    assert job.status.succeeded == 1 and job.status.failed is None and job.status.active is None
    assert job.status.ready == 0
    assert job.status.start_time is not None and job.status.completion_time is not None

    [pod] = _pods(core, 'train')
    assert pod.status.phase == 'Succeeded'
    assert pod.metadata.labels['controller-uid'] == created.metadata.uid
    assert pod.metadata.labels['batch.kubernetes.io/job-name'] == 'train'
    assert pod.metadata.labels['role'] == 'trainer'
    [owner] = pod.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ('Job', 'train', created.metadata.uid, True)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (0, 'Completed', '{"accuracy": 0.93}')


def test_failure_with_an_exit_code(batch: kubernetes.client.BatchV1Api, core: kubernetes.client.CoreV1Api,
                                   outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.failed(exit_code=3, message='bad data')
    batch.create_namespaced_job('ml', job_body('train'))
    job = _finished_job(batch, 'train')
    assert _conditions(job) == {'FailureTarget': ('True', 'BackoffLimitExceeded'),
                                'Failed': ('True', 'BackoffLimitExceeded')}
    assert job.status.failed == 1 and job.status.succeeded is None and job.status.completion_time is None
    [pod] = _pods(core, 'train')
    assert pod.status.phase == 'Failed'
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (3, 'Error', 'bad data')


def test_failures_are_retried_up_to_the_backoff_limit(batch: kubernetes.client.BatchV1Api,
                                                      core: kubernetes.client.CoreV1Api,
                                                      outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.failed(exit_code=1)
    batch.create_namespaced_job('ml', job_body('train', backoff_limit=2))
    job = _finished_job(batch, 'train')
    assert job.status.failed == 3
    assert [pod.status.phase for pod in _pods(core, 'train')] == ['Failed'] * 3


def test_oom_killed(batch: kubernetes.client.BatchV1Api, core: kubernetes.client.CoreV1Api,
                    outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.oom_killed()
    batch.create_namespaced_job('ml', job_body('train'))
    job = _finished_job(batch, 'train')
    assert _conditions(job)['Failed'] == ('True', 'BackoffLimitExceeded')
    terminated = _pods(core, 'train')[0].status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, 'OOMKilled')


def test_scripted_deadline_exceeded(batch: kubernetes.client.BatchV1Api, outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.deadline_exceeded()
    batch.create_namespaced_job('ml', job_body('train', backoff_limit=5))
    job = _finished_job(batch, 'train')
    assert _conditions(job) == {'FailureTarget': ('True', 'DeadlineExceeded'), 'Failed': ('True', 'DeadlineExceeded')}


def test_active_deadline_stops_a_job_that_runs_forever(batch: kubernetes.client.BatchV1Api,
                                                       core: kubernetes.client.CoreV1Api,
                                                       outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', job_body('train', deadline=1))
    job = _finished_job(batch, 'train')
    assert _conditions(job)['Failed'] == ('True', 'DeadlineExceeded')
    [pod] = _pods(core, 'train')
    assert pod.status.phase == 'Failed' and pod.status.reason == 'DeadlineExceeded'


def test_a_job_running_forever_ends_when_resolved(batch: kubernetes.client.BatchV1Api,
                                                  core: kubernetes.client.CoreV1Api, executor: ScriptedExecutor,
                                                  outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', job_body('train'))
    running = wait_for(lambda: (job := batch.read_namespaced_job('train', 'ml')).status.ready == 1 and job,
                       message='the job to run')
    assert running.status.active == 1 and not running.status.conditions
    [pod] = _pods(core, 'train')
    assert pod.status.phase == 'Running' and pod.status.container_statuses[0].state.running is not None
    assert executor.running_forever() == [('ml', 'train')]

    executor.resolve('ml', 'train', JobOutcome.succeeded('done'))
    job = _finished_job(batch, 'train')
    assert _conditions(job)['Complete'] == ('True', 'CompletionsReached')
    assert _pods(core, 'train')[0].status.container_statuses[0].state.terminated.message == 'done'


def test_deleting_a_job_stops_it_and_collects_its_pods(batch: kubernetes.client.BatchV1Api,
                                                       core: kubernetes.client.CoreV1Api, executor: ScriptedExecutor,
                                                       outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', job_body('train'))
    wait_for(lambda: executor.running_forever() == [('ml', 'train')], message='the job to run')
    batch.delete_namespaced_job('train', 'ml', propagation_policy='Background')
    wait_for(lambda: not _pods(core, 'train'), message='the pods to be collected')
    wait_for(lambda: executor.running_forever() == [], message='the execution to be cancelled')


def test_a_non_indexed_job_has_no_completion_index(batch: kubernetes.client.BatchV1Api,
                                                   core: kubernetes.client.CoreV1Api) -> None:
    """Only an Indexed Job's pods get an index label, annotation, hostname and JOB_COMPLETION_INDEX."""
    batch.create_namespaced_job('ml', job_body('train'))
    job = _finished_job(batch, 'train')
    assert job.spec.completion_mode == 'NonIndexed' and job.status.completed_indexes is None
    [pod] = _pods(core, 'train')
    assert 'batch.kubernetes.io/job-completion-index' not in pod.metadata.labels
    assert not pod.metadata.annotations and pod.spec.hostname is None
    assert pod.spec.containers[0].env is None
    assert pod.metadata.name.startswith('train-') and len(pod.metadata.name) == len('train-') + 5


def _deployment_status(apps: kubernetes.client.AppsV1Api, name: str) -> Any:
    return apps.read_namespaced_deployment(name, 'ml').status


def test_deployment_readiness_follows_replicas(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('srv', replicas=2))
    status = wait_for(lambda: (s := _deployment_status(apps, 'srv')).ready_replicas == 2 and s,
                      message='two ready replicas')
    assert (status.replicas, status.updated_replicas, status.available_replicas, status.observed_generation) == (
        2, 2, 2, 1)
    assert {c.type: (c.status, c.reason) for c in status.conditions} == {
        'Available': ('True', 'MinimumReplicasAvailable'), 'Progressing': ('True', 'NewReplicaSetAvailable')}

    apps.patch_namespaced_deployment('srv', 'ml', {'spec': {'replicas': 4}})
    wait_for(lambda: (s := _deployment_status(apps, 'srv')).ready_replicas == 4 and s.observed_generation == 2,
             message='four ready replicas')
    apps.patch_namespaced_deployment('srv', 'ml', {'spec': {'replicas': 0}})
    status = wait_for(lambda: (s := _deployment_status(apps, 'srv')).observed_generation == 3 and s,
                      message='the scale-down to be observed')
    assert status.ready_replicas is None and status.replicas is None and status.available_replicas is None


class TestHeldRollouts:

    @pytest.fixture
    def rollout(self) -> ScriptedRollout:
        return ScriptedRollout(hold=True)

    def test_held_rollouts_wait_for_the_test(self, apps: kubernetes.client.AppsV1Api, rollout: ScriptedRollout) -> None:
        apps.create_namespaced_deployment('ml', deployment_body('srv', replicas=2))
        status = wait_for(lambda: (s := _deployment_status(apps, 'srv')).observed_generation == 1 and s,
                          message='the rollout to start')
        assert status.ready_replicas is None and status.updated_replicas == 2 and status.unavailable_replicas == 2
        assert {c.type: c.status for c in status.conditions} == {'Available': 'False', 'Progressing': 'True'}

        wait_for(lambda: rollout.holding() == [('ml', 'srv')], message='the rollout to be held')
        rollout.release('ml', 'srv')
        wait_for(lambda: _deployment_status(apps, 'srv').ready_replicas == 2, message='the released rollout')

        # A new generation is held again, while the old replicas stay ready.
        apps.patch_namespaced_deployment('srv', 'ml', {'spec': {'template': {'spec': {'containers': [
            {'name': 'main', 'image': 'server:2'}]}}}})
        status = wait_for(lambda: (s := _deployment_status(apps, 'srv')).observed_generation == 2 and s,
                          message='the second rollout to start')
        assert (status.ready_replicas, status.updated_replicas, status.replicas) == (2, 2, 4)
        wait_for(lambda: rollout.holding() == [('ml', 'srv')], message='the second rollout to be held')
        rollout.fail('ml', 'srv')
        status = wait_for(lambda: (s := _deployment_status(apps, 'srv')).conditions and any(
            c.type == 'Progressing' and c.status == 'False' for c in s.conditions) and s, message='the failed rollout')
        assert {c.type: c.reason for c in status.conditions}['Progressing'] == 'ProgressDeadlineExceeded'

        apps.delete_namespaced_deployment('srv', 'ml')
        wait_for(lambda: rollout.torn_down == [('ml', 'srv')], message='the teardown')
