"""Argo CD resource customizations for ModelRelease: a Lua health check and resource actions.

Argo CD reads them from its argocd-cm ConfigMap; `modelrelease argocd-cm` prints that snippet from
these files, so what is tested here is what users install.
"""

from __future__ import annotations

from importlib.resources import files

import yaml

from modelrelease import api

ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume")
CUSTOMIZATION_KEY = f"{api.GROUP}_{api.KIND}"


def health_script() -> str:
    return files(__package__).joinpath("health.lua").read_text(encoding="utf-8")


def discovery_script() -> str:
    return files(__package__).joinpath("actions", "discovery.lua").read_text(encoding="utf-8")


def action_script(name: str) -> str:
    if name not in ACTIONS:
        raise KeyError(f"no Argo CD action {name!r}; the actions are {', '.join(ACTIONS)}")
    return files(__package__).joinpath("actions", f"{name}.lua").read_text(encoding="utf-8")


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (the Lua scripts) as literal blocks, as one would write them by hand."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_ReadableDumper.add_representer(str, _represent_str)


def to_yaml(data: object) -> str:
    return yaml.dump(data, Dumper=_ReadableDumper, sort_keys=False, width=100)


def argocd_cm() -> dict[str, object]:
    """The argocd-cm ConfigMap entries (merge them into the existing ConfigMap)."""
    actions = {"discovery.lua": discovery_script(),
               "definitions": [{"name": name, "action.lua": action_script(name)} for name in ACTIONS]}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd",
                     "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
        "data": {
            f"resource.customizations.health.{CUSTOMIZATION_KEY}": health_script(),
            f"resource.customizations.actions.{CUSTOMIZATION_KEY}": to_yaml(actions),
        },
    }
