"""
What the Job controller decides about a failed Pod, as Kubernetes 1.32 documents it:

- ``spec.podFailurePolicy``: the rules are tried in order and the first that matches decides
  (https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy). ``onExitCodes``
  matches a terminated container with a non-zero exit code (of ``containerName`` if given) that is
  ``In`` or ``NotIn`` the values; ``onPodConditions`` matches a pod condition of that type and status.
  ``FailJob`` fails the Job at once, ``Ignore`` does not count the Pod toward ``backoffLimit``,
  ``Count`` (and no matching rule) counts it.
- the back-off before a replacement Pod: 10 s doubled with each failed Pod since the last success,
  capped at six minutes (https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-backoff-failure-policy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["BACKOFF_BASE_SECONDS", "BACKOFF_CAP_SECONDS", "Decision", "backoff_delay", "decide"]

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 360.0

Action = Literal["FailJob", "Ignore", "Count"]


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    message: str | None = None  # for FailJob: the Job's Failed condition message


def backoff_delay(failed_pods: int) -> float:
    """The documented delay before the next Pod after ``failed_pods`` failures since the last success."""
    if failed_pods <= 0:
        return 0.0
    # Bounded exponent: past 2**6 the cap holds anyway, and a huge count must not overflow.
    return min(BACKOFF_BASE_SECONDS * 2.0 ** min(failed_pods - 1, 16), BACKOFF_CAP_SECONDS)


def _terminated_containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    status = pod.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated and terminated.get("exitCode"):
            yield container.get("name") or "", int(terminated["exitCode"])


def _matching_exit_code(pod: Mapping[str, Any], rule: Mapping[str, Any]) -> tuple[str, int] | None:
    wanted_name = rule.get("containerName")
    values = {int(value) for value in rule.get("values") or []}
    operator = rule.get("operator")
    for name, exit_code in _terminated_containers(pod):
        if wanted_name and name != wanted_name:
            continue
        if (operator == "In" and exit_code in values) or (operator == "NotIn" and exit_code not in values):
            return name, exit_code
    return None


def _matching_condition(pod: Mapping[str, Any], patterns: list[Mapping[str, Any]]) -> str | None:
    conditions = (pod.get("status") or {}).get("conditions") or []
    for pattern in patterns:
        for condition in conditions:
            if condition.get("type") == pattern.get("type") and condition.get("status") == pattern.get("status",
                                                                                                        "True"):
                return str(condition["type"])
    return None


def decide(policy: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> Decision:
    """What to do about this failed Pod under the Job's podFailurePolicy (None: count it)."""
    meta = pod.get("metadata") or {}
    pod_ref = f"{meta.get('namespace')}/{meta.get('name')}"
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes") is not None:
            matched = _matching_exit_code(pod, rule["onExitCodes"])
            if matched is None:
                continue
            why = (f"Container {matched[0]} for pod {pod_ref} failed with exit code {matched[1]}"
                   f" matching {action} rule at index {index}")
        elif rule.get("onPodConditions") is not None:
            condition = _matching_condition(pod, rule["onPodConditions"])
            if condition is None:
                continue
            why = f"Pod {pod_ref} has condition {condition} matching {action} rule at index {index}"
        else:
            continue
        if action == "FailJob":
            return Decision("FailJob", why)
        if action == "Ignore":
            return Decision("Ignore")
        return Decision("Count")  # Count, and FailIndex (which only indexed Jobs may use)
    return Decision("Count")
