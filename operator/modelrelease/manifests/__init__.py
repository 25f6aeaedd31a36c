"""Pure builders of the Kubernetes objects the operator owns (plain dicts, no client)."""
