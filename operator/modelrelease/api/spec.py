"""The ModelRelease spec: what a user asks for.

Field docstrings become the CRD's descriptions (and so ``kubectl explain``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from modelrelease.api.base import Duration, WireModel, dns_label, parse_duration
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import template_errors

DEFAULT_IMAGE = "ghcr.io/modelrelease/trainer:0.1.0"
GateMetric = Literal["accuracy", "precision", "recall", "f1", "loss"]
LOWER_IS_BETTER = frozenset({"loss"})
# What a model version is made of: a change here trains and releases again from the first stage.
# Everything else (serving, analysis, history, control fields) takes effect in place.
RELEASE_FIELDS = ("model", "training", "stages")


class PvcStorage(WireModel):
    claim_name: str
    """Name of a PersistentVolumeClaim (ReadWriteMany when training and serving run on different nodes)."""
    path_prefix: str = ""
    """Folder inside the claim under which this release keeps its model versions."""


class HostPathStorage(WireModel):
    path: str
    """A directory on the node (single-node clusters and the embedded default only)."""


class ArtifactStorage(WireModel):
    pvc: PvcStorage | None = None
    """Keep model artifacts on a PersistentVolumeClaim."""
    host_path: HostPathStorage | None = None
    """Keep model artifacts in a node directory."""
    mount_path: str = "/models"
    """Where the artifact volume is mounted in trainer and server pods."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ArtifactStorage:
        if (self.pvc is None) == (self.host_path is None):
            raise ValueError("set exactly one of pvc or hostPath")
        if not self.mount_path.startswith("/"):
            raise ValueError("mountPath must be an absolute path such as /models")
        return self


class ModelSpec(WireModel):
    name: Annotated[str, dns_label(40)]
    """The model's name; the server reports it as the `model` label of its metrics."""
    storage: ArtifactStorage
    """Where trained versions are written and read."""


class EnvVar(WireModel):
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None
    """As in a container's env (secretKeyRef, configMapKeyRef, fieldRef)."""


class Toleration(WireModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(WireModel):
    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)
    """e.g. {"nvidia.com/gpu": 1, "memory": "8Gi"}."""


class TrainingOverrides(WireModel):
    """Settings a stage may override; unset fields fall back to spec.training."""

    image: str | None = None
    """Trainer image."""
    command: list[str] | None = None
    """Replace the image's entrypoint."""
    args: list[str] | None = None
    """Extra arguments appended after the ones the operator derives from the stage."""
    resources: Resources | None = None
    """Container resources; GPUs as limits, e.g. nvidia.com/gpu: 1."""
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    service_account_name: str | None = None
    env: list[EnvVar] | None = None
    mixed_precision: Literal["auto", "on", "off"] | None = None
    """auto: float16 mixed precision when a GPU is visible, off on CPU."""
    backoff_limit: Annotated[int, Field(ge=0, le=20)] | None = None
    """Retries of a training pod for transient failures (bad config or data fails at once)."""
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    """Wall-clock limit of a training Job."""


class TrainingDefaults(TrainingOverrides):
    image: str = DEFAULT_IMAGE
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    backoff_limit: Annotated[int, Field(ge=0, le=20)] = 2
    active_deadline_seconds: Annotated[int, Field(ge=1)] = 3600


class Optimizer(WireModel):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.001
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0


class StageTraining(TrainingOverrides):
    data: Annotated[str, Field(min_length=1)]
    """Data source: a file or folder path (.npz, .csv) or sklearn:digits, optionally ?fraction=0.3."""
    epochs: Annotated[int, Field(ge=1, le=10000)] = 5
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    optimizer: Optimizer = Optimizer()
    init_from: Literal["previous", "none"] = "previous"
    """previous: start from the previous stage's model (or the stable model in stage one)."""
    seed: Annotated[int, Field(ge=0)] = 0
    eval_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """Share of the data held out to compute the offline metrics the gates read."""


class Gate(WireModel):
    metric: GateMetric
    """An offline metric the trainer reports."""
    min: float | None = None
    """The value must be at least this."""
    max: float | None = None
    """The value must be at most this."""
    max_drop: Annotated[float, Field(ge=0)] | None = None
    """At most this much worse than the stable model (absolute; for loss, worse means higher)."""
    max_relative_drop: Annotated[float, Field(ge=0, le=1)] | None = None
    """At most this fraction worse than the stable model (0.02 = 2%)."""

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if all(v is None for v in (self.min, self.max, self.max_drop, self.max_relative_drop)):
            raise ValueError("a gate needs min, max, maxDrop or maxRelativeDrop")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Step(WireModel):
    weight: Annotated[int, Field(ge=0, le=100)]
    """Canary share of the serving replicas, in percent."""
    duration: Duration = "1m"
    """How long the step lasts; it ends only after an analysis run that passed within it."""


class Stage(WireModel):
    name: Annotated[str, dns_label(30)]
    training: StageTraining | None = None
    """Train this stage's model; exclusive with modelUri."""
    model_uri: str | None = None
    """Use a prebuilt model at this path on the artifact volume instead of training."""
    gates: list[Gate] = Field(default_factory=list)
    """Offline checks the trained model must pass before it serves."""
    steps: Annotated[list[Step], Field(min_length=1)]
    """Canary steps; weights never fall within a stage."""

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
    """Total model-server replicas, split between stable and canary."""
    image: str = DEFAULT_IMAGE
    """Model-server image (the trainer image serves with `serve`)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8501
    resources: Resources | None = None
    template: dict[str, Any] | None = None
    """An optional pod template for the server; the operator injects MODEL_PATH, MODEL_VERSION,
    MODEL_NAME and RELEASE_TRACK into its first container and hardens its security context."""


class SecretKeyRef(WireModel):
    name: str
    key: str


class BasicAuth(WireModel):
    secret_name: str
    username_key: str = "username"
    password_key: str = "password"


class PrometheusSpec(WireModel):
    url: Annotated[str, Field(pattern=r"^https?://")]
    """Base URL, e.g. http://prometheus.monitoring:9090."""
    timeout: Duration = "10s"
    bearer_token_secret_ref: SecretKeyRef | None = None
    basic_auth: BasicAuth | None = None
    ca_secret_ref: SecretKeyRef | None = None
    """A CA bundle (PEM) for https."""
    insecure_skip_verify: bool = False

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
    name: Annotated[str, dns_label(40)]
    preset: str | None = None
    """A named check for the reference server: error-rate, latency-p99, confidence, online-accuracy."""
    query: str | None = None
    """PromQL template; variables {{ release }}, {{ namespace }}, {{ model }}, {{ version }}, {{ track }}
    (inside quotes) and {{ interval }}."""
    min: float | None = None
    max: float | None = None
    min_ratio: Annotated[float, Field(gt=0)] | None = None
    """canary / stable must be at least this."""
    max_ratio: Annotated[float, Field(gt=0)] | None = None
    """canary / stable must be at most this."""
    sample_query: str | None = None
    """Counts the canary's traffic in the interval; fewer than minSampleCount is inconclusive."""

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
        if self.preset is None and all(
            v is None for v in (self.min, self.max, self.min_ratio, self.max_ratio)
        ):
            raise ValueError("a check needs min, max, minRatio or maxRatio")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}); no value could pass")
        if self.min_ratio is not None and self.max_ratio is not None and self.min_ratio > self.max_ratio:
            raise ValueError(f"minRatio ({self.min_ratio}) is above maxRatio ({self.max_ratio}); no value could pass")
        return self


class AnalysisSpec(WireModel):
    prometheus: PrometheusSpec | None = None
    interval: Duration = "30s"
    """Time between analysis runs; also the range of rate() in presets."""
    failure_limit: Annotated[int, Field(ge=0)] = 0
    """Failed runs tolerated per canary; one more rolls back."""
    inconclusive_limit: Annotated[int, Field(ge=0)] = 3
    """Consecutive inconclusive runs tolerated; one more pauses the release."""
    consecutive_error_limit: Annotated[int, Field(ge=0)] = 4
    """Consecutive runs with query errors tolerated; one more pauses the release."""
    min_sample_count: Annotated[int, Field(ge=0)] = 20
    checks: list[AnalysisCheck] = Field(default_factory=list)

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
        return self


RequestId = Annotated[str, Field(min_length=1, max_length=128)]


class UndoAction(WireModel):
    request_id: RequestId
    to_version: Annotated[str, Field(min_length=1)]
    """A version id from status.history (or a unique prefix of one)."""


class Actions(WireModel):
    """One-shot requests. Each is a request id; a new id asks again, the same id is a no-op."""

    promote: RequestId | None = None
    """Finish the current step now."""
    promote_full: RequestId | None = None
    """Skip the remaining steps and stages: the canary becomes stable."""
    abort: RequestId | None = None
    """Roll back: canary to zero, stable to all replicas."""
    retry: RequestId | None = None
    """Start the current stage again after a rollback, or resume an analysis pause."""
    undo: UndoAction | None = None
    """Make a kept version stable again."""


class ModelReleaseSpec(WireModel):
    model: ModelSpec
    training: TrainingDefaults = TrainingDefaults()
    """Training settings shared by all stages."""
    stages: Annotated[list[Stage], Field(min_length=1, max_length=20)]
    serving: ServingSpec = ServingSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    paused: bool = False
    """Hold the release where it is; analysis and steps stop, serving stays as is."""
    actions: Actions = Actions()
    revision_history_limit: Annotated[int, Field(ge=1, le=100)] = 10
    """Released versions kept in status.history (and restorable with actions.undo)."""

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
        partial = any(0 < w < 100 for w in weights)
        if partial and self.serving.replicas < 2:
            raise ValueError(
                "serving.replicas must be at least 2 when a step has a weight between 0 and 100: "
                "the canary needs its own pod beside the stable one"
            )
        return self
