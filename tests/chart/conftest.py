"""The operator tests' harness (embedded API server, scripted world, the operator process), reused here."""

from tests.operator.conftest import harness  # noqa: F401
