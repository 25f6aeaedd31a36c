"""
Per-kind defaulting and validation, as the real API server's registry strategies do them.

Only what the operator and its tests can observe is emulated: Job selectors and controller labels,
Deployment defaults, Pod/Namespace initial statuses, CRD acceptance conditions, and the validation
that a real cluster would reject (so that mistakes surface locally, not on the first real cluster).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from modelrelease_local import cel, errors, schema
from modelrelease_local.resources import ApiResource
from modelrelease_local.schema import FieldValidation

__all__ = ["admit_create", "admit_update", "validate_name"]

Object = dict[str, Any]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose names must be DNS labels (no dots), as in the real validation.
_DNS_LABEL_KINDS = {("", "namespaces"), ("", "services")}
_WORKLOADS = {("", "pods"), ("apps", "deployments"), ("batch", "jobs")}


def validate_name(resource: ApiResource, name: str) -> None:
    pattern = _LABEL_NAME if resource.storage in _DNS_LABEL_KINDS else _SUBDOMAIN
    limit = 63 if resource.storage in _DNS_LABEL_KINDS else 253
    if not name or len(name) > limit or not pattern.match(name):
        raise errors.invalid(resource, name, f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123'
                             f" name of at most {limit} characters is required")


def _pod_spec(resource: ApiResource, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if resource.storage == ("", "pods"):
        return obj.get("spec") or {}
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def _validate_pod_spec(resource: ApiResource, obj: Object) -> None:
    name = obj["metadata"]["name"]
    containers = _pod_spec(resource, obj).get("containers") or []
    if not containers:
        raise errors.invalid(resource, name, "spec.containers: Required value")
    for container in containers:
        if not container.get("name") or not container.get("image"):
            raise errors.invalid(resource, name, "spec.containers: name and image are required")


INDEXED_JOB_LIMIT = 100_000  # Kubernetes' cap on an Indexed Job's completions and parallelism


def _job_on_create(resource: ApiResource, obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
    restart_policy = (_pod_spec(resource, obj)).get("restartPolicy")
    if restart_policy not in ("Never", "OnFailure"):
        raise errors.invalid(resource, name, f"spec.template.spec.restartPolicy: Unsupported value:"
                             f' "{restart_policy}": supported values: "OnFailure", "Never"')
    mode = spec.setdefault("completionMode", "NonIndexed")
    if mode not in ("NonIndexed", "Indexed"):
        raise errors.invalid(resource, name, f'spec.completionMode: Unsupported value: "{mode}": supported values: '
                                             '"NonIndexed", "Indexed"')
    if mode == "Indexed":
        if spec.get("completions") is None:
            raise errors.invalid(resource, name, "spec.completions: Required value: when completion mode is Indexed")
        for field in ("completions", "parallelism"):
            if int(spec.get(field) or 0) > INDEXED_JOB_LIMIT:
                raise errors.invalid(resource, name, f"spec.{field}: Invalid value: {spec[field]}: must be less "
                                                     f"than or equal to {INDEXED_JOB_LIMIT} when completion mode "
                                                     "is Indexed")
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("suspend", False)
    controller_labels = {
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name,
    }
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **controller_labels}
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    if not obj["metadata"].get("labels"):
        obj["metadata"]["labels"] = dict(template_meta["labels"])


def _deployment_on_create(resource: ApiResource, obj: Object) -> None:
    spec = obj.setdefault("spec", {})
    name = obj["metadata"]["name"]
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("strategy", {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    selector = (spec.get("selector") or {}).get("matchLabels")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector:
        raise errors.invalid(resource, name, "spec.selector: Required value")
    if any(labels.get(key) != value for key, value in selector.items()):
        raise errors.invalid(resource, name, "spec.template.metadata.labels: Invalid value:"
                             " `selector` does not match template `labels`")


def _pod_on_create(resource: ApiResource, obj: Object) -> None:
    obj.setdefault("spec", {}).setdefault("restartPolicy", "Always")
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def _namespace_on_create(resource: ApiResource, obj: Object) -> None:
    obj["status"] = {"phase": "Active"}


def _crd_on_create_or_update(resource: ApiResource, obj: Object) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    name = obj["metadata"]["name"]
    problems = [
        field for field, value in [
            ("spec.group", spec.get("group")), ("spec.names.plural", names.get("plural")),
            ("spec.names.kind", names.get("kind")), ("spec.versions", spec.get("versions")),
        ] if not value
    ]
    if problems:
        raise errors.invalid(resource, name, f"{', '.join(problems)}: Required value")
    if name != f"{names['plural']}.{spec['group']}":
        raise errors.invalid(resource, name, 'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group')
    if sum(1 for version in spec["versions"] if version.get("storage")) != 1:
        raise errors.invalid(resource, name, "spec.versions: Invalid value: exactly one version must be storage")
    # A rule that does not compile is refused with the CRD, not found later on the first object.
    uncompiled = [problem for index, version in enumerate(spec["versions"])
                  if (version_schema := (version.get("schema") or {}).get("openAPIV3Schema"))
                  for problem in cel.compile_errors(version_schema, f"spec.versions[{index}].schema.openAPIV3Schema")]
    if uncompiled:
        raise errors.invalid(resource, name, "; ".join(uncompiled))
    accepted = {key: value for key, value in names.items()}
    accepted.setdefault("singular", names["kind"].lower())
    accepted.setdefault("listKind", f"{names['kind']}List")
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": None}
        for kind, reason, message in [
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ]
    ]
    obj["status"] = {
        "acceptedNames": accepted,
        "conditions": conditions,
        "storedVersions": [version["name"] for version in spec["versions"] if version.get("storage")],
    }


_ON_CREATE: dict[tuple[str, str], Callable[[ApiResource, Object], None]] = {
    ("batch", "jobs"): _job_on_create,
    ("apps", "deployments"): _deployment_on_create,
    ("", "pods"): _pod_on_create,
    ("", "namespaces"): _namespace_on_create,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd_on_create_or_update,
}


def _admit_custom(resource: ApiResource, obj: Object, old: Mapping[str, Any] | None,
                  validation: FieldValidation) -> None:
    """A custom resource against its CRD version's schema, in the server's order."""
    structural = resource.schema
    if structural is None:
        return
    validation.unknown_fields(resource, schema.prune(obj, structural))
    schema.apply_defaults(obj, structural)
    problems = schema.validate(obj, structural, old)
    # The CRD's x-kubernetes-validations (CEL) rules are checked here, after the schema, adding to
    # the same problems: the server answers one 422 with every cause.
    problems += cel.rule_problems(resource, obj, old, problems)
    if problems:
        raise errors.invalid_fields(resource, obj["metadata"]["name"], problems)


def admit_create(resource: ApiResource, obj: Object, now: str, validation: FieldValidation | None = None) -> None:
    """Default and validate a new object in place (its metadata is already stamped)."""
    if resource.custom:
        _admit_custom(resource, obj, None, validation or FieldValidation())
    if resource.storage in _WORKLOADS:
        _validate_pod_spec(resource, obj)
    hook = _ON_CREATE.get(resource.storage)
    if hook is not None:
        hook(resource, obj)
    _stamp_condition_times(obj, now)


def admit_update(resource: ApiResource, old: Mapping[str, Any], new: Object, now: str,
                 validation: FieldValidation | None = None) -> None:
    """Validate an updated object in place; the immutable metadata is already restored."""
    if resource.custom:
        _admit_custom(resource, new, old, validation or FieldValidation())
    name = new["metadata"]["name"]
    if resource.storage in _WORKLOADS and new.get("spec") != old.get("spec"):
        _validate_pod_spec(resource, new)
    if resource.storage == ("batch", "jobs"):
        old_selector = (old.get("spec") or {}).get("selector")
        if (new.get("spec") or {}).get("selector") != old_selector:
            raise errors.forbidden_change(resource, name, "spec.selector: field is immutable")
    is_crd = resource.storage == ("apiextensions.k8s.io", "customresourcedefinitions")
    if is_crd and new.get("spec") != old.get("spec"):
        _crd_on_create_or_update(resource, new)  # re-validate and re-accept the names
    _stamp_condition_times(new, now)


def _stamp_condition_times(obj: Object, now: str) -> None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("lastTransitionTime", "") is None:
            condition["lastTransitionTime"] = now
