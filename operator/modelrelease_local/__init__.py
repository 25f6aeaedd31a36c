"""The embedded default: an in-process Kubernetes API, controllers and processes for one machine."""

from __future__ import annotations
