"""
Indexed Jobs on the embedded cluster, observed through the kubernetes client, against what Kubernetes
1.32 documents (https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode): a Pod
per completion index with its index label, annotation, hostname and JOB_COMPLETION_INDEX, at most
`parallelism` at once, `completedIndexes`, and the podFailurePolicy and backoffLimit over all indexes.
With the process executor, each index is a local process, the workers' hosts rewritten to loopback ports.
"""
import contextlib
import json
import os
import pathlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.executor import ProcessJobExecutor, process_environment
from modelrelease_local.indexes import format_indexes
from modelrelease_local.outcomes import JobOutcome, ScriptedExecutor
from modelrelease_local.volumes import pod_path_map
from tests.waiting import wait_for

INDEX = 'batch.kubernetes.io/job-completion-index'
# The operator's rules for the trainer container: bad configuration or data fail the Job, disruptions are ignored.
OPERATOR_POLICY = {'rules': [
    {'action': 'FailJob', 'onExitCodes': {'containerName': 'trainer', 'operator': 'In', 'values': [64, 65]}},
    {'action': 'Ignore', 'onPodConditions': [{'type': 'DisruptionTarget', 'status': 'True'}]},
]}


def indexed_job(name: str, workers: int = 2, *, parallelism: int | None = None, backoff_limit: int = 0,
                **spec: Any) -> dict[str, Any]:
    """A Job shaped as the operator builds one for several training workers."""
    hosts = ','.join(f'{name}-{index}.{name}.ml.svc:2222' for index in range(workers))
    trainer = {'name': 'trainer', 'image': 'trainer:1', 'args': ['train', '--workers', str(workers)],
               'env': [{'name': 'TRAINER_WORKER_HOSTS', 'value': hosts}],
               'ports': [{'name': 'worker', 'containerPort': 2222}]}
    return {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': name}, 'spec': {
        'completionMode': 'Indexed', 'completions': workers,
        'parallelism': workers if parallelism is None else parallelism,
        'backoffLimit': backoff_limit, 'podFailurePolicy': OPERATOR_POLICY, **spec,
        'template': {'metadata': {'labels': {'role': 'trainer'}},
                     'spec': {'subdomain': name, 'restartPolicy': 'Never', 'containers': [trainer]}}}}


def headless_service(name: str) -> dict[str, Any]:
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': name}, 'spec': {
        'clusterIP': 'None', 'publishNotReadyAddresses': True,
        'selector': {'batch.kubernetes.io/job-name': name}, 'ports': [{'name': 'worker', 'port': 2222}]}}


def finished(batch: kubernetes.client.BatchV1Api, name: str) -> Any:
    def done() -> Any:
        job = batch.read_namespaced_job(name, 'ml')
        return job if {c.type for c in job.status.conditions or [] if c.status == 'True'} & {'Complete',
                                                                                              'Failed'} else None
    return wait_for(done, message=f'the job {name} to finish')


def pods_of(core: kubernetes.client.CoreV1Api, job: str, index: int | None = None) -> list[Any]:
    selector = f'job-name={job}' + ('' if index is None else f',{INDEX}={index}')
    pods = core.list_namespaced_pod('ml', label_selector=selector).items
    return sorted(pods, key=lambda pod: int(pod.metadata.resource_version))


def conditions(job: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in job.status.conditions}


def terminated(pod: Any) -> Any:
    return pod.status.container_statuses[0].state.terminated


def test_completed_indexes_are_written_as_kubernetes_writes_them() -> None:
    """JobStatus.completedIndexes: increasing, comma-separated, three or more consecutive numbers as first-last."""
    assert format_indexes([7, 1, 4, 3, 5]) == '1,3-5,7'
    assert format_indexes([0, 1]) == '0,1'
    assert format_indexes(range(4)) == '0-3'
    assert format_indexes([]) == ''


def test_the_process_executor_resolves_field_refs_from_the_pod(tmp_path: pathlib.Path) -> None:
    """Downward API env (https://kubernetes.io/docs/tasks/inject-data-application/environment-variable-expose-pod-information/):
    the pod's name, namespace, labels and annotations (a missing key is empty); secrets and config maps are not
    emulated, so such variables are left out."""
    pod = {'metadata': {'name': 'dist-1-abcde', 'namespace': 'ml', 'labels': {INDEX: '1'},
                        'annotations': {'note': 'x'}}, 'spec': {'nodeName': 'embedded-node'}}
    refs = {'NAME': 'metadata.name', 'NAMESPACE': 'metadata.namespace', 'INDEX': f"metadata.labels['{INDEX}']",
            'NOTE': "metadata.annotations['note']", 'MISSING': "metadata.labels['absent']", 'NODE': 'spec.nodeName'}
    container = {'env': [{'name': name, 'valueFrom': {'fieldRef': {'fieldPath': path}}} for name, path in refs.items()]
                 + [{'name': 'SECRET', 'valueFrom': {'secretKeyRef': {'name': 's', 'key': 'k'}}}]}
    env = process_environment(container, pod_path_map({}, container, tmp_path / 'root', tmp_path / 'scratch'),
                              pod=pod)
    assert {name: env.get(name) for name in [*refs, 'SECRET']} == {
        'NAME': 'dist-1-abcde', 'NAMESPACE': 'ml', 'INDEX': '1', 'NOTE': 'x', 'MISSING': '', 'NODE': 'embedded-node',
        'SECRET': None}


def test_an_indexed_job_runs_a_pod_per_index(batch: kubernetes.client.BatchV1Api,
                                             core: kubernetes.client.CoreV1Api) -> None:
    service = core.create_namespaced_service('ml', headless_service('dist'))
    assert (service.spec.cluster_ip, service.spec.publish_not_ready_addresses) == ('None', True)
    batch.create_namespaced_job('ml', indexed_job('dist'))

    job = finished(batch, 'dist')
    assert conditions(job) == {'SuccessCriteriaMet': ('True', 'CompletionsReached'),
                               'Complete': ('True', 'CompletionsReached')}
    assert (job.status.succeeded, job.status.completed_indexes, job.status.failed, job.status.active) == (
        2, '0,1', None, None)
    for index in (0, 1):
        [pod] = pods_of(core, 'dist', index)
        assert pod.status.phase == 'Succeeded'
        assert pod.metadata.name.startswith(f'dist-{index}-') and len(pod.metadata.name) == len('dist-0-') + 5
        assert pod.metadata.annotations[INDEX] == str(index)
        assert pod.metadata.labels['batch.kubernetes.io/job-name'] == 'dist'
        assert (pod.spec.hostname, pod.spec.subdomain) == (f'dist-{index}', 'dist')
        env = {variable.name: variable for variable in pod.spec.containers[0].env}
        assert env['JOB_COMPLETION_INDEX'].value_from.field_ref.field_path == f"metadata.labels['{INDEX}']"
        assert env['TRAINER_WORKER_HOSTS'].value == 'dist-0.dist.ml.svc:2222,dist-1.dist.ml.svc:2222'
    # The headless Service selects the Job's pods, as the workers' DNS names need.
    assert len(core.list_namespaced_pod('ml', label_selector='batch.kubernetes.io/job-name=dist').items) == 2


def test_parallelism_bounds_the_running_pods(batch: kubernetes.client.BatchV1Api, core: kubernetes.client.CoreV1Api,
                                             executor: ScriptedExecutor, outcomes: dict[str, JobOutcome]) -> None:
    outcomes['queue'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', indexed_job('queue', 3, parallelism=1))
    wait_for(lambda: executor.running_forever() == [('ml', 'queue', 0)], message='index 0 to run')
    assert len(pods_of(core, 'queue')) == 1 and batch.read_namespaced_job('queue', 'ml').status.active == 1

    executor.resolve('ml', 'queue', JobOutcome.succeeded(), index=0)
    wait_for(lambda: executor.running_forever() == [('ml', 'queue', 1)], message='index 1 to run')
    status = wait_for(lambda: (s := batch.read_namespaced_job('queue', 'ml').status).succeeded == 1 and s,
                      message='index 0 to be counted')
    assert (status.completed_indexes, status.active) == ('0', 1)
    executor.resolve('ml', 'queue', JobOutcome.succeeded(), index=2)  # kept until index 2's pod runs
    executor.resolve('ml', 'queue', JobOutcome.succeeded(), index=1)
    job = finished(batch, 'queue')
    assert (job.status.succeeded, job.status.completed_indexes) == (3, '0-2')
    assert [pod.metadata.labels[INDEX] for pod in pods_of(core, 'queue')] == ['0', '1', '2']


def test_a_fail_job_exit_code_on_one_index_stops_the_others(batch: kubernetes.client.BatchV1Api,
                                                            core: kubernetes.client.CoreV1Api,
                                                            executor: ScriptedExecutor,
                                                            outcomes: dict[str, JobOutcome]) -> None:
    outcomes['bad'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', indexed_job('bad', backoff_limit=6))
    wait_for(lambda: executor.running_forever() == [('ml', 'bad', 0), ('ml', 'bad', 1)], message='both to run')

    executor.resolve('ml', 'bad', JobOutcome.failed(exit_code=64, message='bad flag'), index=1)
    job = finished(batch, 'bad')
    [failing] = pods_of(core, 'bad', 1)
    assert conditions(job)['Failed'] == ('True', 'PodFailurePolicy')
    assert failing.metadata.name in next(c.message for c in job.status.conditions if c.type == 'Failed')
    assert job.status.failed == 2 and job.status.active is None  # the stopped index counts as failed
    [stopped] = pods_of(core, 'bad', 0)
    assert stopped.status.phase == 'Failed' and terminated(stopped).exit_code == 137
    assert (terminated(failing).exit_code, terminated(failing).message) == (64, 'bad flag')
    wait_for(lambda: executor.running_forever() == [], message="index 0's execution to stop")


def test_failures_of_all_indexes_count_toward_the_backoff_limit(batch: kubernetes.client.BatchV1Api,
                                                                core: kubernetes.client.CoreV1Api,
                                                                executor: ScriptedExecutor,
                                                                outcomes: dict[str, JobOutcome]) -> None:
    outcomes['flaky'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', indexed_job('flaky', backoff_limit=1))
    both = [('ml', 'flaky', 0), ('ml', 'flaky', 1)]
    wait_for(lambda: executor.running_forever() == both, message='both to run')
    [first_chief] = pods_of(core, 'flaky', 0)

    executor.resolve('ml', 'flaky', JobOutcome.failed(exit_code=1), index=1)
    wait_for(lambda: executor.running_forever() == both and len(pods_of(core, 'flaky', 1)) == 2,
             message='index 1 to be replaced')
    status = wait_for(lambda: (s := batch.read_namespaced_job('flaky', 'ml').status).failed == 1 and s,
                      message='the failure to be counted')
    assert status.active == 2 and not status.conditions
    assert [pod.metadata.name for pod in pods_of(core, 'flaky', 0)] == [first_chief.metadata.name]

    executor.resolve('ml', 'flaky', JobOutcome.failed(exit_code=1), index=1)
    job = finished(batch, 'flaky')
    assert conditions(job)['Failed'] == ('True', 'BackoffLimitExceeded')
    assert job.status.failed == 3  # two counted failures, and the chief stopped with the Job
    assert {pod.status.phase for pod in pods_of(core, 'flaky')} == {'Failed'}


def test_an_ignored_disruption_replaces_only_that_index(batch: kubernetes.client.BatchV1Api,
                                                        core: kubernetes.client.CoreV1Api,
                                                        executor: ScriptedExecutor,
                                                        outcomes: dict[str, JobOutcome]) -> None:
    outcomes['evicted'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', indexed_job('evicted', backoff_limit=0))
    both = [('ml', 'evicted', 0), ('ml', 'evicted', 1)]
    wait_for(lambda: executor.running_forever() == both, message='both to run')
    [worker] = pods_of(core, 'evicted', 1)

    executor.resolve('ml', 'evicted', JobOutcome.disrupted('PreemptionByScheduler'), index=0)
    wait_for(lambda: executor.running_forever() == both and len(pods_of(core, 'evicted', 0)) == 2,
             message='index 0 to be replaced')
    [still] = pods_of(core, 'evicted', 1)
    assert (still.metadata.name, still.status.phase) == (worker.metadata.name, 'Running')

    executor.resolve('ml', 'evicted', JobOutcome.succeeded(), index=0)
    executor.resolve('ml', 'evicted', JobOutcome.succeeded(), index=1)
    job = finished(batch, 'evicted')
    assert conditions(job)['Complete'] == ('True', 'CompletionsReached')
    assert (job.status.failed, job.status.succeeded, job.status.completed_indexes) == (None, 2, '0,1')
    disrupted, replacement = pods_of(core, 'evicted', 0)
    assert {c.type: c.reason for c in disrupted.status.conditions}['DisruptionTarget'] == 'PreemptionByScheduler'
    assert replacement.status.phase == 'Succeeded'


def test_the_active_deadline_stops_every_index(batch: kubernetes.client.BatchV1Api, core: kubernetes.client.CoreV1Api,
                                               outcomes: dict[str, JobOutcome]) -> None:
    outcomes['slow'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', indexed_job('slow', activeDeadlineSeconds=1))
    job = finished(batch, 'slow')
    assert conditions(job)['Failed'] == ('True', 'DeadlineExceeded') and job.status.failed == 2
    assert [(pod.status.phase, pod.status.reason) for pod in pods_of(core, 'slow')] == [
        ('Failed', 'DeadlineExceeded')] * 2


def test_deleting_an_indexed_job_stops_every_index(batch: kubernetes.client.BatchV1Api,
                                                   core: kubernetes.client.CoreV1Api, executor: ScriptedExecutor,
                                                   outcomes: dict[str, JobOutcome]) -> None:
    outcomes['gone'] = JobOutcome.run_forever()
    batch.create_namespaced_job('ml', indexed_job('gone'))
    wait_for(lambda: executor.running_forever() == [('ml', 'gone', 0), ('ml', 'gone', 1)], message='both to run')
    batch.delete_namespaced_job('gone', 'ml', propagation_policy='Background')
    wait_for(lambda: not pods_of(core, 'gone'), message='the pods to be collected')
    wait_for(lambda: executor.running_forever() == [], message='the executions to be cancelled')


@contextlib.contextmanager
def clients(server: EmbeddedApiServer, tmp_path: pathlib.Path) -> Iterator[tuple[Any, Any]]:
    """The batch and core API of a server that a test builds itself."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(server.write_kubeconfig(tmp_path / 'kubeconfig')),
                                       client_configuration=configuration)
    with kubernetes.client.ApiClient(configuration) as client:
        yield kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)


def test_the_back_off_is_the_jobs_over_all_indexes(tmp_path: pathlib.Path) -> None:
    """Pod backoff failure policy: 10 s doubled per failed pod since the last success, whichever index failed;
    the failure beyond backoffLimit ends the Job, with no back-off after it."""
    emulator = ControllerEmulator(ScriptedExecutor(lambda job: JobOutcome.failed(exit_code=1)),
                                  job_backoff_scale=0.001)
    with EmbeddedApiServer(controllers=[emulator]) as server, clients(server, tmp_path) as (batch, _):
        batch.create_namespaced_job('ml', indexed_job('flaky', backoff_limit=3))
        job = finished(batch, 'flaky')
        assert conditions(job)['Failed'] == ('True', 'BackoffLimitExceeded')
        assert emulator.jobs.backoff_delays[('ml', 'flaky')] == [10.0, 20.0, 40.0]


def test_a_restarted_control_plane_replaces_only_the_lost_indexes(tmp_path: pathlib.Path) -> None:
    """Over a persisted store, a succeeded index stays done; a Pod left Running is lost as a dead node's Pods are
    (DisruptionTarget, DeletionByTaintManager), which the operator's policy ignores, and its index runs again."""
    with EmbeddedApiServer() as server, clients(server, tmp_path) as (batch, core):
        job = batch.create_namespaced_job('ml', indexed_job('resumed'))
        left = {index: _pod_left_by_an_earlier_run(core, job, index, phase)
                for index, phase in ((0, 'Succeeded'), (1, 'Running'))}
        server.attach(ControllerEmulator(ScriptedExecutor(), job_backoff_scale=0.0))

        done = finished(batch, 'resumed')
        assert (done.status.succeeded, done.status.completed_indexes, done.status.failed) == (2, '0,1', None)
        assert [pod.metadata.name for pod in pods_of(core, 'resumed', 0)] == [left[0]]
        lost, again = pods_of(core, 'resumed', 1)
        assert lost.metadata.name == left[1] and lost.status.phase == 'Failed'
        assert {c.type: c.reason for c in lost.status.conditions}['DisruptionTarget'] == 'DeletionByTaintManager'
        assert again.status.phase == 'Succeeded'


def _pod_left_by_an_earlier_run(core: kubernetes.client.CoreV1Api, job: Any, index: int, phase: str) -> str:
    uid, name = job.metadata.uid, job.metadata.name
    pod = core.create_namespaced_pod('ml', {'metadata': {
        'name': f'{name}-{index}-old', 'annotations': {INDEX: str(index)},
        'labels': {'job-name': name, 'batch.kubernetes.io/controller-uid': uid, INDEX: str(index)},
        'ownerReferences': [{'apiVersion': 'batch/v1', 'kind': 'Job', 'name': name, 'uid': uid, 'controller': True}]},
        'spec': {'containers': [{'name': 'trainer', 'image': 'trainer:1'}]}})
    state = {'terminated': {'exitCode': 0, 'reason': 'Completed', 'startedAt': '2025-01-01T00:00:00Z',
                            'finishedAt': '2025-01-01T00:01:00Z'}} if phase == 'Succeeded' else {
        'running': {'startedAt': '2025-01-01T00:00:00Z'}}
    core.patch_namespaced_pod_status(pod.metadata.name, 'ml', {'status': {'phase': phase, 'containerStatuses': [
        {'name': 'trainer', 'ready': phase == 'Running', 'started': phase == 'Running', 'restartCount': 0,
         'image': 'trainer:1', 'imageID': '', 'state': state}]}})
    return str(pod.metadata.name)


# Each worker records what it was given under the artifact volume; worker 1 waits on its first attempt
# (for the test to kill it); with a release file named, every worker waits for it after printing an epoch.
WORKER = '''
import json, os, pathlib, sys, time
seen = pathlib.Path(os.environ["SEEN"])
seen.mkdir(parents=True, exist_ok=True)
index = os.environ["JOB_COMPLETION_INDEX"]
record = seen / (index + ".jsonl")
attempt = len(record.read_text().splitlines()) if record.exists() else 0
entry = {"tf_config": os.environ.get("TF_CONFIG"), "hosts": os.environ["TRAINER_WORKER_HOSTS"],
         "index": index, "pod": os.environ["POD_NAME"], "attempt": attempt}
with record.open("a") as out:
    out.write(json.dumps(entry) + "\\n")
print("Epoch %d/3" % (int(index) + 1), flush=True)
release = os.environ.get("RELEASE")
while (release and not pathlib.Path(release).exists()) or (index == "1" and attempt == 0 and not release):
    time.sleep(0.05)
'''


def worker_job(name: str, *, backoff_limit: int = 0, **env: str) -> dict[str, Any]:
    """An Indexed Job of two workers running WORKER with the artifact volume, as the operator's trainer Job has."""
    body = indexed_job(name, backoff_limit=backoff_limit)
    pod_spec = body['spec']['template']['spec']
    pod_spec['volumes'] = [{'name': 'models', 'persistentVolumeClaim': {'claimName': 'models'}}]
    [trainer] = pod_spec['containers']
    trainer.update(command=['python3', '-c', WORKER], volumeMounts=[{'name': 'models', 'mountPath': '/models'}])
    trainer['env'] += [{'name': key, 'value': value} for key, value in {'SEEN': '/models/seen', **env}.items()]
    trainer['env'].append({'name': 'POD_NAME', 'valueFrom': {'fieldRef': {'fieldPath': 'metadata.name'}}})
    return body


class TestWorkerProcesses:
    """The process executor runs each index as a local process, the workers meeting on loopback ports."""

    @pytest.fixture
    def executor(self, tmp_path: pathlib.Path) -> ProcessJobExecutor:
        return ProcessJobExecutor(tmp_path / 'artifacts', sys.executable)

    def test_workers_get_loopback_hosts_and_keep_their_ports_across_retries(
            self, batch: kubernetes.client.BatchV1Api, core: kubernetes.client.CoreV1Api,
            executor: ProcessJobExecutor, tmp_path: pathlib.Path) -> None:
        seen = tmp_path / 'artifacts' / 'seen'
        batch.create_namespaced_job('ml', worker_job('dist', backoff_limit=1))

        pid = wait_for(lambda: (seen / '1.jsonl').exists() and executor.running_workers().get(('ml', 'dist', 1)),
                       message='worker 1 to run')
        os.kill(pid, signal.SIGKILL)  # a worker killed from outside fails its pod (137), which counts
        job = finished(batch, 'dist')

        assert conditions(job)['Complete'] == ('True', 'CompletionsReached')
        assert (job.status.completed_indexes, job.status.failed) == ('0,1', 1)
        killed, retried = pods_of(core, 'dist', 1)
        assert terminated(killed).exit_code == 137 and retried.status.phase == 'Succeeded'
        records = {index: [json.loads(line) for line in (seen / f'{index}.jsonl').read_text().splitlines()]
                   for index in (0, 1)}
        assert [entry['pod'] for entry in records[1]] == [killed.metadata.name, retried.metadata.name]
        assert [entry['pod'] for entry in records[0]] == [pod.metadata.name for pod in pods_of(core, 'dist', 0)]
        cluster = records[0][0]['hosts'].split(',')
        assert len(cluster) == 2 and len(set(cluster)) == 2
        assert all(address.startswith('127.0.0.1:') for address in cluster)
        for index, entries in records.items():
            for entry in entries:  # the retried worker comes back at the address its peer knows
                # As on a cluster: the hosts and the index from the downward API, no TF_CONFIG given.
                assert (entry['hosts'], entry['index'], entry['tf_config']) == (','.join(cluster), str(index), None)
        assert executor.running_workers() == {}

    def test_progress_reports_the_chief(self, batch: kubernetes.client.BatchV1Api, executor: ProcessJobExecutor,
                                        tmp_path: pathlib.Path) -> None:
        release = tmp_path / 'artifacts' / 'release'
        batch.create_namespaced_job('ml', worker_job('dist', RELEASE='/models/release'))

        workers = wait_for(lambda: len(executor.running_workers()) == 2 and executor.running_workers(),
                           message='both workers to run')
        assert set(workers) == {('ml', 'dist', 0), ('ml', 'dist', 1)}
        [progress] = wait_for(lambda: [p for p in executor.progress() if p.epochs], message='an epoch in the log')
        assert (progress.namespace, progress.job, progress.epoch, progress.epochs) == ('ml', 'dist', 1, 3)
        release.touch()
        assert conditions(finished(batch, 'dist'))['Complete'] == ('True', 'CompletionsReached')


@pytest.mark.parametrize(('change', 'message'), [
    ({'completions': None}, 'spec.completions: Required value: when completion mode is Indexed'),
    ({'completionMode': 'Sharded'}, 'spec.completionMode: Unsupported value: "Sharded"'),
    ({'completions': 100_001, 'parallelism': 1}, 'spec.completions: Invalid value: 100001'),
])
def test_an_indexed_job_kubernetes_would_refuse_is_refused(batch: kubernetes.client.BatchV1Api,
                                                           change: dict[str, Any], message: str) -> None:
    job = indexed_job('refused')
    job['spec'].update(change)
    job['spec'] = {k: v for k, v in job['spec'].items() if v is not None}
    with pytest.raises(kubernetes.client.ApiException) as caught:
        batch.create_namespaced_job('ml', job)
    assert caught.value.status == 422 and message in json.loads(caught.value.body)['message']
