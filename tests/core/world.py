"""A pure, in-memory stand-in for the cluster, to drive the planner through whole releases.

It plays only what the planner's actions ask for: Jobs appear when created and finish when a test
says so; Deployments become ready at once (or, with instant_ready off, when a test says so).
No clock: tests pass `now`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelrelease.api import ModelReleaseSpec, ModelReleaseStatus, parse_spec
from modelrelease.core.analysis import Measurement
from modelrelease.core.measurement import AnalysisRun, Reading, Role, request_measurements
from modelrelease.core.model import (
    ApplyDeployment,
    CreateJob,
    DeleteJob,
    DeploymentObservation,
    EmitEvent,
    EnsureService,
    JobObservation,
    Observations,
    Plan,
    SetRoute,
)
from modelrelease.core.naming import serving_hash
from modelrelease.core.planner import plan
from modelrelease.core.route_state import RouteObservation, RouteState

T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def base_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "digits", "storage": {"hostPath": {"path": "/srv/models"}}},
        "stages": [
            {"name": "warmup", "training": {"data": "sklearn:digits?fraction=0.3"},
             "gates": [{"metric": "accuracy", "min": 0.8}], "steps": [{"weight": 10, "duration": "1m"}]},
            {"name": "grow", "training": {"data": "sklearn:digits?fraction=0.6", "optimizer": {"name": "adamw"}},
             "gates": [{"metric": "accuracy", "min": 0.8, "maxDrop": 0.05}],
             "steps": [{"weight": 10, "duration": "1m"}, {"weight": 50, "duration": "1m"}]},
            {"name": "full", "training": {"data": "sklearn:digits"},
             "gates": [{"metric": "f1", "maxRelativeDrop": 0.05}],
             "steps": [{"weight": 50, "duration": "1m"}, {"weight": 100, "duration": "1m"}]},
        ],
        "serving": {"replicas": 10},
        "analysis": {
            "prometheus": {"url": "http://prometheus:9090"},
            "interval": "30s",
            "failureLimit": 0,
            "inconclusiveLimit": 2,
            "minSampleCount": 10,
            "checks": [{"name": "errors", "preset": "error-rate"},
                       {"name": "latency", "preset": "latency-p99"}],
        },
    }
    spec.update(overrides)
    return spec


def result_for(stage: str, accuracy: float = 0.95, n: int = 0) -> dict[str, Any]:
    digest = hashlib.sha256(f"{stage}/{accuracy}/{n}".encode()).hexdigest()
    return {
        "schemaVersion": 1, "ok": True, "stage": stage, "version": f"sha256:{digest}",
        "artifactPath": f"/srv/models/{stage}-{n}",
        "metrics": {"accuracy": accuracy, "precision": accuracy, "recall": accuracy, "f1": accuracy,
                    "loss": 1 - accuracy, "samples": 360},
        "dataSource": "sklearn:digits", "trainedAt": "2026-11-01T12:00:00Z",
    }


HEALTHY = {"errors": Measurement("errors", canary=0.0, stable=0.0, samples=100),
           "latency": Measurement("latency", canary=0.05, stable=0.05, samples=100)}
FAILING = {**HEALTHY, "errors": Measurement("errors", canary=0.5, stable=0.0, samples=100)}
QUIET = {k: Measurement(k, canary=v.canary, stable=v.stable, samples=1) for k, v in HEALTHY.items()}


def readings_of(scripted: Measurement, asked: list[Role]) -> dict[Role, Reading]:
    """The readings that make the core measure ``scripted``, for the queries it asked."""
    if scripted.error:
        return {asked[0]: Reading.failure(scripted.error)}
    values = {"canary": scripted.canary, "stable": scripted.stable, "samples": scripted.samples}
    found = scripted.comparison
    if found is not None:
        values.update({"compare-canary-trials": found.canary_trials, "compare-stable-trials": found.stable_trials,
                       "compare-canary": found.canary_rate, "compare-stable": found.stable_rate})
    readings: dict[Role, Reading] = {}
    for role in asked:
        if found is not None and role in ("compare-canary", "compare-stable") and found.canary_rate is None:
            readings[role] = Reading.of_samples(found.canary_samples if role == "compare-canary"
                                                else found.stable_samples)
        else:
            value = values.get(role)
            readings[role] = Reading.no_data() if value is None else Reading.of(value)
    return readings


@dataclass
class World:
    spec: ModelReleaseSpec
    status: ModelReleaseStatus = field(default_factory=ModelReleaseStatus)
    now: datetime = T0
    jobs: dict[str, JobObservation] = field(default_factory=dict)
    deployments: dict[str, DeploymentObservation] = field(default_factory=dict)
    service: bool = False
    created_jobs: list[str] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    instant_ready: bool = True
    metrics: dict[str, Measurement] = field(default_factory=lambda: dict(HEALTHY))
    generation: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    route: RouteObservation | None = None
    """The HTTPRoute, played when the spec routes traffic: it does what the last SetRoute said."""
    track_services: set[str] = field(default_factory=set)
    route_writes: list[tuple[RouteState, dict[str, int]]] = field(default_factory=list)
    """Each SetRoute with the canary's and stable's replicas at the moment it was applied."""

    @classmethod
    def of(cls, raw: dict[str, Any] | None = None, **kw: Any) -> World:
        return cls(spec=parse_spec(raw or base_spec()), **kw)

    def observations(self, measure: bool) -> Observations:
        run = None
        request = request_measurements(self.spec, self.status, self.now, release="digits", namespace="default")
        if measure and request is not None:
            # Prometheus as scripted by the test: each query the core asked for reads the test's numbers.
            run = AnalysisRun(request, {
                item.check: readings_of(self.metrics[item.check], [ask.role for ask in item.queries.by_role()])
                for item in request.checks
            })
        if self.spec.serving.traffic_routing is not None and self.route is None:
            self.route = RouteObservation("digits-route", state=RouteState.stable_only())
        return Observations(jobs=dict(self.jobs), deployments=dict(self.deployments),
                            service_exists=self.service, analysis=run,
                            route=self.route if self.spec.serving.traffic_routing is not None else None,
                            track_services=frozenset(self.track_services))

    def step(self, measure: bool = True) -> Plan:
        result = plan(self.spec, self.status, self.observations(measure), self.now,
                      release="digits", generation=self.generation, annotations=self.annotations)
        self.plans.append(result)
        self.apply(result)
        return result

    def apply(self, result: Plan) -> None:
        for action in result.actions:
            if isinstance(action, CreateJob):
                if action.name not in self.jobs:
                    self.created_jobs.append(action.name)
                    self.jobs[action.name] = JobObservation(action.name, "Active")
            elif isinstance(action, DeleteJob):
                self.jobs.pop(action.name, None)
            elif isinstance(action, ApplyDeployment):
                seen = self.deployments.get(action.track)
                version = action.version.id if action.version else (seen.version if seen else None)
                # A version in the action means the pod template was rebuilt from the current spec.
                settings = serving_hash(self.spec) if action.version else (seen.serving_hash if seen else None)
                same_template = seen is not None and (seen.version, seen.serving_hash) == (version, settings)
                # Not instant: new pods are not ready yet, but a scaled Deployment keeps its ready pods.
                kept = min(seen.ready, action.replicas) if seen is not None and same_template else 0
                ready = action.replicas if self.instant_ready else kept
                self.deployments[action.track] = DeploymentObservation(
                    action.track, version, action.replicas, ready, settings)
            elif isinstance(action, EnsureService):
                if action.track is None:
                    self.service = True
                else:
                    self.track_services.add(action.track)
            elif isinstance(action, SetRoute):
                assert self.route is not None and self.route.problem is None, "a route write on an unusable route"
                self.route = RouteObservation(self.route.name, state=action.state)
                self.route_writes.append((action.state, {t: d.replicas for t, d in self.deployments.items()}))
            elif isinstance(action, EmitEvent):
                self.events.append(action)
        self.status = result.status

    def settle(self, limit: int = 12) -> None:
        """Plan and apply at the same instant until nothing more is asked (a fixpoint)."""
        for _ in range(limit):
            before = self.status
            result = self.step(measure=False)
            if not result.actions and result.status == before:
                return
        raise AssertionError(f"no fixpoint after {limit} passes: {result.actions}")

    def finish_jobs(self, accuracy: float = 0.95) -> None:
        for name, job in list(self.jobs.items()):
            if job.phase == "Active":
                stage = next(r.name for r in self.status.stages if r.job_name == name)
                self.jobs[name] = JobObservation(name, "Succeeded", result_for(stage, accuracy, len(self.created_jobs)))

    def fail_jobs(self, reason: str = "exit code 65: bad data") -> None:
        for name, job in list(self.jobs.items()):
            if job.phase == "Active":
                self.jobs[name] = JobObservation(name, "Failed", reason=reason)

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def run_until(self, phases: set[str], limit: int = 400, tick: float = 15.0, accuracy: float = 0.95) -> None:
        for _ in range(limit):
            self.finish_jobs(accuracy)
            self.step()
            self.settle()
            if self.status.phase in phases:
                return
            self.wait(tick)
        raise AssertionError(f"phase {self.status.phase} never reached {phases}: {self.status.message}")

    def run_until_training(self, stage_index: int, limit: int = 400) -> None:
        """Run until the given stage's job is running (its predecessors finished)."""
        for _ in range(limit):
            self.step()
            self.settle()
            if self.status.phase == "Training" and self.status.stage_index == stage_index:
                return
            self.finish_jobs()
            self.wait(15)
        raise AssertionError(f"stage {stage_index} never started training: {self.status.message}")

    def replicas(self) -> tuple[int, int]:
        stable = self.deployments.get("stable")
        canary = self.deployments.get("canary")
        return (stable.replicas if stable else 0, canary.replicas if canary else 0)

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]
