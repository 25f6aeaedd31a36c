"""The ModelRelease spec: what a user asks for.

Field docstrings become the CRD's descriptions (and so ``kubectl explain``). A description says what
the field is, its unit or format, and the default the model sets (the CRD itself carries no defaults).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from modelrelease.api.base import Duration, WireModel, dns_label, parse_duration
from modelrelease.api.compare import CompareSpec, compare_problem
from modelrelease.api.routing import CanaryScale, HeaderRoute, MirrorRoute, TrafficRouting, routing_problems
from modelrelease.api.training_rules import managed_flag_problems, resources_problem, worker_problems
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import template_errors

DEFAULT_IMAGE = "ghcr.io/modelrelease/trainer:0.1.0"
MAX_WORKERS = 64
"""The most training pods of one stage: one Indexed Job's pods, whose hostnames end in -<index>."""
GateMetric = Literal["accuracy", "precision", "recall", "f1", "loss"]
LOWER_IS_BETTER = frozenset({"loss"})
# What a model version is made of: a change here trains and releases again from the first stage.
# Everything else (serving, analysis, history, control fields) takes effect in place.
RELEASE_FIELDS = ("model", "training", "stages")


class PvcStorage(WireModel):
    claim_name: str
    """Name of a PersistentVolumeClaim in the release's namespace. It must be ReadWriteMany when
    training and serving pods run on different nodes."""
    path_prefix: str = ""
    """Folder inside the claim that holds this release's model versions; mounted as the volume's
    subPath. Default "" (the claim's root)."""


class HostPathStorage(WireModel):
    path: str
    """Absolute directory on the node, created if missing. For single-node clusters and the embedded
    default only."""


class ArtifactStorage(WireModel):
    pvc: PvcStorage | None = None
    """Keep model artifacts on a PersistentVolumeClaim. Exactly one of pvc and hostPath."""
    host_path: HostPathStorage | None = None
    """Keep model artifacts in a node directory. Exactly one of pvc and hostPath."""
    mount_path: Annotated[str, Field(max_length=4096)] = "/models"
    """Absolute path where the artifact volume is mounted: read-write in training pods, read-only in
    server pods. Each training Job writes under <mountPath>/<release name>/<Job name>. Default /models."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ArtifactStorage:
        if (self.pvc is None) == (self.host_path is None):
            raise ValueError("set exactly one of pvc or hostPath")
        if not self.mount_path.startswith("/"):
            raise ValueError("mountPath must be an absolute path such as /models")
        return self


class ModelSpec(WireModel):
    name: Annotated[str, dns_label(40), Field(max_length=40)]
    """The model's name: lower-case letters, digits and '-', starting and ending with a letter or digit,
    at most 40 characters. Passed to the server as MODEL_NAME (the reference server reports it as the
    `model` label of its metrics) and filled into queries as {{ model }}."""
    storage: ArtifactStorage
    """Where trained versions are written and read: exactly one of pvc and hostPath."""


class EnvVar(WireModel):
    name: str
    """Name of the environment variable."""
    value: str | None = None
    """Literal value of the variable; exclusive with valueFrom."""
    value_from: dict[str, Any] | None = None
    """Take the value from a source, as in a container's env (secretKeyRef, configMapKeyRef, fieldRef)."""


class Toleration(WireModel):
    key: str | None = None
    """Taint key the toleration matches; unset with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the value must equal the taint's); unset means Equal, as in a pod spec."""
    value: str | None = None
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; unset matches all effects."""
    toleration_seconds: int | None = None
    """Seconds a pod stays bound to a node after a NoExecute taint appears; unset: forever."""


class Resources(WireModel):
    requests: dict[str, str | int] = Field(default_factory=dict)
    """Resources the container is guaranteed, as Kubernetes quantities (strings or integers), e.g.
    {"cpu": "500m", "memory": "2Gi"}. Default none."""
    limits: dict[str, str | int] = Field(default_factory=dict)
    """Most the container may use, as Kubernetes quantities; GPUs go here, e.g.
    {"nvidia.com/gpu": 1, "memory": "8Gi"}. Default none."""

    @model_validator(mode="after")
    def _schedulable(self) -> Resources:
        problem = resources_problem(self.requests, self.limits)
        if problem:
            raise ValueError(problem)
        return self


class TrainingOverrides(WireModel):
    """Settings a stage may override; unset fields fall back to spec.training."""

    image: str | None = None
    """Trainer image. Unset in a stage: spec.training.image."""
    command: list[str] | None = None
    """Replaces the trainer image's entrypoint. Unset: the image's entrypoint (in a stage:
    spec.training.command)."""
    args: list[str] | None = None
    """Extra arguments appended after the ones the operator derives from the stage (--data, --epochs,
    --batch-size, --optimizer, --learning-rate, --seed, --output, --init-from, ...). A stage's list
    replaces spec.training.args, it is not merged."""
    resources: Resources | None = None
    """Trainer container resources (requests, limits); GPUs as limits, e.g. nvidia.com/gpu: 1. A stage's
    value replaces spec.training.resources as a whole. Default none."""
    node_selector: dict[str, str] | None = None
    """Node labels the training pod must match, as in a pod spec. A stage's map replaces
    spec.training.nodeSelector, it is not merged. Default none."""
    tolerations: list[Toleration] | None = None
    """Taints the training pod tolerates, as in a pod spec. A stage's list replaces
    spec.training.tolerations. Default none."""
    service_account_name: str | None = None
    """Service account of the training pod (its token is not mounted). Unset: the namespace's default
    service account (in a stage: spec.training.serviceAccountName)."""
    env: list[EnvVar] | None = None
    """Environment variables of the trainer container, as in a container's env. A stage's list replaces
    spec.training.env, it is not merged. Default none."""
    mixed_precision: Literal["auto", "on", "off"] | None = None
    """Float16 mixed precision: auto (on when a GPU is visible, off on CPU), on or off. Unset in a stage:
    spec.training.mixedPrecision."""
    backoff_limit: Annotated[int, Field(ge=0, le=20)] | None = None
    """Retries of a training pod after transient failures, 0 to 20 (bad configuration or data, exit 64
    or 65, fails the Job at once; evictions do not count). Unset in a stage: spec.training.backoffLimit."""
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    """Seconds a training Job may run, wall clock, at least 1; then it fails without retries. Unset in a
    stage: spec.training.activeDeadlineSeconds."""
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] | None = None
    """Training pods of the stage, 1 to 64, each with the resources above. Above 1 the Job is an Indexed Job
    of that many pods that train together (TensorFlow's MultiWorkerMirroredStrategy), found through a
    headless Service; their model volume must be shared (a ReadWriteMany claim, or hostPath on one node).
    Unset in a stage: spec.training.workers."""


class TrainingDefaults(TrainingOverrides):
    image: str = DEFAULT_IMAGE
    """Trainer image. Default ghcr.io/modelrelease/trainer:0.1.0."""
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    """Float16 mixed precision: auto (on when a GPU is visible, off on CPU), on or off. Default auto."""
    backoff_limit: Annotated[int, Field(ge=0, le=20)] = 2
    """Retries of a training pod after transient failures, 0 to 20 (bad configuration or data, exit 64
    or 65, fails the Job at once; evictions do not count). Default 2."""
    active_deadline_seconds: Annotated[int, Field(ge=1)] = 3600
    """Seconds a training Job may run, wall clock, at least 1; then it fails without retries.
    Default 3600."""
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 1
    """Training pods of each stage, 1 to 64, each with the resources above. Above 1 the Job is an Indexed
    Job of that many pods that train together (TensorFlow's MultiWorkerMirroredStrategy), found through a
    headless Service; their model volume must be shared (a ReadWriteMany claim, or hostPath on one node).
    Default 1."""


class Optimizer(WireModel):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    """Optimizer: adam, adamw or sgd. Default adam."""
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.001
    """Learning rate, above 0 and at most 10. Default 0.001."""
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Weight decay, 0 to 1. Default 0."""


class StageTraining(TrainingOverrides):
    data: Annotated[str, Field(min_length=1)]
    """Data source: a file or folder path (.npz, .csv) or sklearn:digits, optionally followed by
    ?fraction=0.3 to use part of it."""
    epochs: Annotated[int, Field(ge=1, le=10000)] = 5
    """Training epochs, 1 to 10000. Default 5."""
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    """Examples per training batch, 1 to 65536. Default 32."""
    optimizer: Optimizer = Optimizer()
    """Optimizer and its settings. Default adam, learningRate 0.001, weightDecay 0."""
    init_from: Literal["previous", "none"] = "previous"
    """previous: start from the previous stage's model (in the first stage from the stable model, if
    any); none: train from scratch. Default previous."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Random seed, 0 or more. Default 0."""
    eval_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """Share of the data held out to compute the offline metrics the gates read, above 0 and below 1.
    Default 0.2."""


class Gate(WireModel):
    metric: GateMetric
    """An offline metric the trainer reports: accuracy, precision, recall, f1 or loss. A missing or
    non-finite value fails the gate."""
    min: float | None = None
    """The value must be at least this."""
    max: float | None = None
    """The value must be at most this; not below min."""
    max_drop: Annotated[float, Field(ge=0)] | None = None
    """At most this much worse than the stable model's value (absolute, 0 or more; for loss, worse
    means higher). Skipped without a stable value to compare with."""
    max_relative_drop: Annotated[float, Field(ge=0, le=1)] | None = None
    """At most this fraction of the stable model's value worse, 0 to 1 (0.02 = 2%; for loss, worse
    means higher). Skipped without a stable value to compare with."""

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if all(v is None for v in (self.min, self.max, self.max_drop, self.max_relative_drop)):
            raise ValueError("a gate needs min, max, maxDrop or maxRelativeDrop")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Step(WireModel):
    weight: Annotated[int, Field(ge=0, le=100)]
    """Canary share of the serving replicas, in percent, 0 to 100: canary pods are
    ceil(replicas * weight / 100), and below 100 the stable keeps at least one pod."""
    duration: Duration = "1m"
    """Minimum length of the step, a Go duration (30s, 5m, 1h30m); it ends only after an analysis run
    that passed within it and, with trafficRouting, once the route does what the step asks. Default 1m."""
    canary_scale: CanaryScale | None = None
    """With trafficRouting: the canary's pods during this step, overriding serving.canaryScale."""
    header_route: HeaderRoute | None = None
    """With trafficRouting: requests carrying this header go to the canary, whatever the weight."""
    mirror: MirrorRoute | None = None
    """With trafficRouting: copy this share of requests to the canary and discard its answers (a shadow
    step at weight 0 never answers users from the canary)."""


class Stage(WireModel):
    name: Annotated[str, dns_label(30), Field(max_length=30)]
    """Stage name, unique within the release: lower-case letters, digits and '-', starting and ending
    with a letter or digit, at most 30 characters. Part of Job and version names."""
    training: StageTraining | None = None
    """Train this stage's model: the spec.training fields (each overriding its default) plus data and
    the hyperparameters. Exactly one of training and modelUri."""
    model_uri: str | None = None
    """Use a prebuilt model at this path on the artifact volume instead of training (passed to the
    server as is). Exactly one of training and modelUri; cannot have gates (there are no training metrics)."""
    gates: list[Gate] = Field(default_factory=list)
    """Offline checks the trained model must pass before it serves. Default none."""
    steps: Annotated[list[Step], Field(min_length=1, max_length=20)]
    """Canary steps, 1 to 20; weights never fall within a stage."""

    @model_validator(mode="after")
    def _source_and_steps(self) -> Stage:
        if (self.training is None) == (self.model_uri is None):
            raise ValueError("set exactly one of training or modelUri")
        if self.model_uri is not None and self.gates:
            raise ValueError("gates need the metrics of a training run; remove them or train this stage")
        weights = [s.weight for s in self.steps]
        for i in range(1, len(weights)):
            if weights[i] < weights[i - 1]:
                raise ValueError(
                    f"steps[{i}].weight {weights[i]} is below steps[{i - 1}].weight {weights[i - 1]}; "
                    "weights may only grow within a stage"
                )
        return self


class ServingSpec(WireModel):
    replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    """Total model-server replicas, 1 to 1000, split between stable and canary (the canary never adds
    pods); at least 2 when a step has a weight between 0 and 100. A change rescales both tracks in
    place. Default 2."""
    image: str = DEFAULT_IMAGE
    """Model-server image (the trainer image serves with its `serve` command); used only when template
    has no container. Default ghcr.io/modelrelease/trainer:0.1.0."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8501
    """Server port, 1 to 65535: the Service port, the container port and the /readyz and /healthz
    probes (unless the template sets them). Default 8501."""
    resources: Resources | None = None
    """Server container resources (requests, limits), unless the template's container sets its own.
    Default none."""
    template: dict[str, Any] | None = None
    """An optional pod template for the server; the operator injects MODEL_PATH, MODEL_VERSION,
    MODEL_NAME and RELEASE_TRACK into its first container, mounts the artifact volume read-only and a
    writable /tmp, adds its labels and hardens the pod and container security contexts."""
    traffic_routing: TrafficRouting | None = None
    """Route traffic by a Gateway API HTTPRoute: the canary gets the step's weight exactly, the stable keeps
    all serving.replicas, and the canary has canaryScale pods. Default none: the canary's share of traffic
    is its share of pods."""
    canary_scale: CanaryScale | None = None
    """With trafficRouting: the canary's pods; a step's canaryScale overrides it. Default
    matchTrafficWeight."""


class SecretKeyRef(WireModel):
    name: str
    """Name of a Secret in the release's namespace."""
    key: str
    """Key in that Secret."""


class BasicAuth(WireModel):
    secret_name: str
    """Name of a Secret in the release's namespace holding the credentials."""
    username_key: str = "username"
    """Key of the user name in that Secret. Default username."""
    password_key: str = "password"
    """Key of the password in that Secret. Default password."""


class PrometheusSpec(WireModel):
    url: Annotated[str, Field(pattern=r"^https?://")]
    """Base URL starting with http:// or https://, e.g. http://prometheus.monitoring:9090."""
    timeout: Duration = "10s"
    """Timeout of each query, a Go duration above 0s; once Prometheus proves unreachable in a run, the
    rest of that run's queries are not sent. Default 10s."""
    bearer_token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a bearer token sent with each query; exclusive with basicAuth."""
    basic_auth: BasicAuth | None = None
    """Secret holding HTTP basic-auth credentials; exclusive with bearerTokenSecretRef."""
    ca_secret_ref: SecretKeyRef | None = None
    """Secret key holding a CA bundle (PEM) to verify https; exclusive with insecureSkipVerify."""
    insecure_skip_verify: bool = False
    """Skip TLS certificate verification; exclusive with caSecretRef. Default false."""

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> PrometheusSpec:
        if self.bearer_token_secret_ref is not None and self.basic_auth is not None:
            raise ValueError("set bearerTokenSecretRef or basicAuth, not both")
        if self.insecure_skip_verify and self.ca_secret_ref is not None:
            raise ValueError("insecureSkipVerify would ignore caSecretRef; set one of them")
        if parse_duration(self.timeout).total_seconds() <= 0:
            raise ValueError("timeout must be above 0s, e.g. 10s")
        return self


class AnalysisCheck(WireModel):
    name: Annotated[str, dns_label(40), Field(max_length=40)]
    """Check name, unique among checks: lower-case letters, digits and '-', at most 40 characters."""
    preset: Annotated[str, Field(max_length=63)] | None = None
    """A named check: for the reference server error-rate, latency-p99, confidence, online-accuracy; for
    TensorFlow Serving tfserving-error-rate, tfserving-latency-p99 (docs/tf-serving.md). Exactly one of preset
    and query."""
    query: str | None = None
    """PromQL template returning one number; variables {{ release }}, {{ namespace }}, {{ model }},
    {{ version }}, {{ track }} (inside double quotes) and {{ interval }} (outside quotes). Exactly one
    of preset and query."""
    min: float | None = None
    """The canary's value must be at least this. Setting any bound on a preset check drops the
    preset's default bound."""
    max: float | None = None
    """The canary's value must be at most this; not below min."""
    min_ratio: Annotated[float, Field(gt=0)] | None = None
    """canary value / stable value must be at least this (above 0); skipped at weight 100."""
    max_ratio: Annotated[float, Field(gt=0)] | None = None
    """canary value / stable value must be at most this (above 0); skipped at weight 100."""
    sample_query: str | None = None
    """PromQL template counting the canary's traffic in the interval; fewer than minSampleCount is
    inconclusive. Default: the preset's sample query, none for a query check."""
    compare: CompareSpec | None = None
    """Compare the canary's samples with the stable's statistically, instead of or besides the bounds.
    Default none."""
    dry_run: bool = False
    """Evaluate, record and chart this check, but never let it decide a run (it cannot fail, pause or
    roll back a release). Default false."""

    @model_validator(mode="after")
    def _query_and_bounds(self) -> AnalysisCheck:
        if (self.preset is None) == (self.query is None):
            raise ValueError("set exactly one of preset or query")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; the presets are {', '.join(PRESETS)}")
        for field, template in (("query", self.query), ("sampleQuery", self.sample_query)):
            problems = template_errors(template) if template else []
            if problems:
                raise ValueError(f"{field}: " + "; ".join(problems))
        if self.preset is None and self.compare is None and all(
            v is None for v in (self.min, self.max, self.min_ratio, self.max_ratio)
        ):
            raise ValueError("a check needs min, max, minRatio, maxRatio or compare")
        if self.compare is not None:
            preset = PRESETS[self.preset] if self.preset is not None else None
            query = self.query if preset is None else preset.query
            sample_query = self.sample_query or (preset.sample_query if preset is not None else None)
            problem = compare_problem(self.compare, query or "", sample_query, self.preset,
                                      preset.buckets_query if preset is not None else None)
            if problem:
                raise ValueError(problem)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}); no value could pass")
        if self.min_ratio is not None and self.max_ratio is not None and self.min_ratio > self.max_ratio:
            raise ValueError(f"minRatio ({self.min_ratio}) is above maxRatio ({self.max_ratio}); no value could pass")
        return self


class AnalysisSpec(WireModel):
    prometheus: PrometheusSpec | None = None
    """Where to query; required when checks is not empty. Secrets are read from the release's
    namespace."""
    interval: Duration = "30s"
    """Time between analysis runs, a Go duration of at least 1s; also the range of rate() and
    increase() in presets ({{ interval }}). Default 30s."""
    failure_limit: Annotated[int, Field(ge=0)] = 0
    """Failed runs tolerated per canary version, over all its steps; one more rolls back. Default 0."""
    inconclusive_limit: Annotated[int, Field(ge=0)] = 3
    """Inconclusive runs tolerated since the last decisive (passing or failing) run; one more pauses the
    release. Default 3."""
    consecutive_error_limit: Annotated[int, Field(ge=0)] = 4
    """Runs with query errors tolerated since the last decisive (passing or failing) run; one more
    pauses the release. Default 4."""
    min_sample_count: Annotated[int, Field(ge=0)] = 20
    """Fewest canary samples in the interval, as counted by a check's sample query, for that check to be
    judged; fewer is Inconclusive. Default 20."""
    checks: list[AnalysisCheck] = Field(default_factory=list, max_length=20)
    """The checks of each run, at most 20; names unique. Required when a step has a weight below 100. Default none."""

    @model_validator(mode="after")
    def _prometheus_when_checks(self) -> AnalysisSpec:
        if self.checks and self.prometheus is None:
            raise ValueError("checks need prometheus.url")
        names = [c.name for c in self.checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique; repeated: {', '.join(duplicates)}")
        if parse_duration(self.interval).total_seconds() < 1:
            raise ValueError("interval must be at least 1s")
        interval = parse_duration(self.interval)
        for check in self.checks:
            if check.compare is not None and parse_duration(check.compare.window) < interval:
                raise ValueError(f"checks[{check.name}].compare.window ({check.compare.window}) is shorter than "
                                 f"the interval ({self.interval}); set a window of at least one interval")
        return self


RequestId = Annotated[str, Field(min_length=1, max_length=128)]


class UndoAction(WireModel):
    request_id: RequestId
    """Request id of this undo, 1 to 128 characters; a new id asks again, the same id is a no-op."""
    to_version: Annotated[str, Field(min_length=1)]
    """A version from status.history: its id, its name, or a prefix of the id's hex digits that matches
    one version only."""


class Actions(WireModel):
    """One-shot requests. Each is a request id; a new id asks again, the same id is a no-op."""

    promote: RequestId | None = None
    """Request id (1 to 128 characters): finish the current canary step now."""
    promote_full: RequestId | None = None
    """Request id (1 to 128 characters): skip the remaining steps and stages; the canary becomes stable."""
    abort: RequestId | None = None
    """Request id (1 to 128 characters): roll back; canary to zero, stable to all replicas, in batches."""
    retry: RequestId | None = None
    """Request id (1 to 128 characters): start the current stage again after a rollback or failure, or
    resume an analysis pause."""
    undo: UndoAction | None = None
    """Make a version kept in status.history stable again."""


class ModelReleaseSpec(WireModel):
    model: ModelSpec
    """The model's name and where its artifacts are stored."""
    training: TrainingDefaults = TrainingDefaults()
    """Training settings shared by all stages; each stage may override them."""
    stages: Annotated[list[Stage], Field(min_length=1, max_length=20)]
    """1 to 20 stages, run in order: each trains (or takes a prebuilt model), gates, and canaries its
    model in steps. Names unique; the last stage's last step must have weight 100."""
    serving: ServingSpec = ServingSpec()
    """The model servers: the stable and canary Deployments and the Service in front of both. Default
    2 replicas of the trainer image on port 8501."""
    analysis: AnalysisSpec = AnalysisSpec()
    """How canaries are judged from Prometheus. Default: no checks (interval 30s)."""
    paused: bool = False
    """Hold the release where it is; analysis and steps stop, serving stays as is. No effect while
    Promoting, RollingBack or ended. Default false."""
    actions: Actions = Actions()
    """One-shot requests, each a request id: a new id asks again, the same id is a no-op. Default none."""
    revision_history_limit: Annotated[int, Field(ge=1, le=100)] = 10
    """Released versions kept in status.history (and restorable with actions.undo), 1 to 100; applies
    from the next release. Default 10."""

    @model_validator(mode="after")
    def _release_shape(self) -> ModelReleaseSpec:
        names = [s.name for s in self.stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(duplicates)}")
        last = self.stages[-1].steps[-1].weight
        if last != 100:
            raise ValueError(
                f"the last stage must end at weight 100 (it ends at {last}); add a step with weight: 100"
            )
        weights = [step.weight for stage in self.stages for step in stage.steps]
        if any(w < 100 for w in weights) and not self.analysis.checks:
            raise ValueError(
                "analysis.checks are required when a step has a weight below 100: "
                "without them nothing judges the canary before it takes all traffic"
            )
        problems = routing_problems(self) + worker_problems(self) + managed_flag_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        partial = any(0 < w < 100 for w in weights)
        if partial and self.serving.replicas < 2 and self.serving.traffic_routing is None:
            raise ValueError(
                "serving.replicas must be at least 2 when a step has a weight between 0 and 100: "
                "the canary needs its own pod beside the stable one"
            )
        return self
