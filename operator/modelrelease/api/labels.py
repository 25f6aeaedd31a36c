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
ANNOTATION_VERSION_ID = "modelrelease.io/version-id"
ANNOTATION_SERVING_HASH = "modelrelease.io/serving-hash"
