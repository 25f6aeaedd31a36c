"""`kubectl modelrelease`: the kubectl plugin (an executable `kubectl-modelrelease` on PATH).

A program of its own beside the operator: it reads ModelReleases and their Events and asks for
actions by annotating the release, which Git never holds, so a GitOps tool sees no drift.
"""
