"""Trains model stages and serves them: `python -m modelrelease_trainer train|serve` (see docs/trainer.md)."""
