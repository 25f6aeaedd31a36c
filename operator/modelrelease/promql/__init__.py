"""PromQL query templates and the named checks (presets): a leaf that the API and the core both read.

Nothing here imports another part of the operator, so the API can validate templates and the core
can render them without an import running up the layers.
"""
