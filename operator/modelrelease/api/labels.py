"""The labels and annotations the operator puts on what it makes: part of the API, since users,
dashboards and the operator's own watches select by them."""

from __future__ import annotations

MANAGED_BY = "model-release-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RELEASE = "modelrelease.io/release"
"""Names the ModelRelease a child object belongs to; the operator lists and watches by it."""
LABEL_TRACK = "modelrelease.io/track"
LABEL_VERSION = "modelrelease.io/version"
LABEL_STAGE = "modelrelease.io/stage"
LABEL_WORKERS = "modelrelease.io/workers"
"""On a multi-worker training Job and its pods: how many workers train together."""
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""Set by Kubernetes on the pods of an Indexed Job: the worker's index (0 is the chief)."""
ANNOTATION_VERSION_ID = "modelrelease.io/version-id"
ANNOTATION_SERVING_HASH = "modelrelease.io/serving-hash"

# What a person asks for without touching the spec (the kubectl plugin, Argo CD actions): Git never
# holds these annotations, so a GitOps tool sees no drift. Each one-shot request carries a request id
# that fires at most once in the release's life, exactly as the same request in spec.actions.
REQUEST_PREFIX = "request.modelrelease.io/"
ANNOTATION_REQUESTS = {
    "promote": REQUEST_PREFIX + "promote",
    "promote_full": REQUEST_PREFIX + "promote-full",
    "abort": REQUEST_PREFIX + "abort",
    "retry": REQUEST_PREFIX + "retry",
    "undo": REQUEST_PREFIX + "undo",
}
ANNOTATION_UNDO_TO = REQUEST_PREFIX + "undo-to"
"""The version an undo request restores (a name or id from status.history, or a unique prefix)."""
ANNOTATION_PAUSED = "modelrelease.io/paused"
"""\"true\" holds the release as spec.paused does, without a change to the spec."""
