"""The ModelRelease API (modelrelease.io/v1alpha1) as pydantic models."""

from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import ModelReleaseStatus
from modelrelease.api.validation import InvalidSpecError, parse_spec

GROUP = "modelrelease.io"
VERSION = "v1alpha1"
KIND = "ModelRelease"
PLURAL = "modelreleases"
SINGULAR = "modelrelease"
SHORT_NAMES = ["mrel"]
CATEGORIES = ["modelrelease", "ml"]
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = [
    "API_VERSION",
    "CATEGORIES",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "InvalidSpecError",
    "ModelReleaseSpec",
    "ModelReleaseStatus",
    "parse_spec",
]
