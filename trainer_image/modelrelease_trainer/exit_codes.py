"""Process exit codes of the trainer and server, and the errors that map to them.

The operator's Job podFailurePolicy fails a training Job at once on CONFIG_ERROR and DATA_ERROR
(retrying cannot fix a bad flag or a corrupt file), and lets the Job's backoff retry TRANSIENT and
UNEXPECTED. The values follow BSD sysexits.h so they read familiarly in `kubectl describe`.
"""

from __future__ import annotations

OK = 0
UNEXPECTED = 1
"""A bug: an exception nobody anticipated. Retried by the Job's backoff."""
CONFIG_ERROR = 64
"""EX_USAGE: a flag, a value or a data-source option is wrong. Never retried."""
DATA_ERROR = 65
"""EX_DATAERR: the data or a previous model is missing, corrupt, unparseable or has the wrong shape."""
TRANSIENT = 75
"""EX_TEMPFAIL: writing the output failed, memory ran out, the pod was told to stop. Retry."""

DESCRIPTIONS: dict[int, str] = {
    OK: "ok",
    UNEXPECTED: "unexpected error",
    CONFIG_ERROR: "bad configuration",
    DATA_ERROR: "bad data",
    TRANSIENT: "transient failure, retry",
}


class TrainerError(Exception):
    """An anticipated failure; its message is shown to the user as is, so it should say what to fix."""

    exit_code = UNEXPECTED


class ConfigError(TrainerError):
    exit_code = CONFIG_ERROR


class DataError(TrainerError):
    exit_code = DATA_ERROR


class TransientError(TrainerError):
    exit_code = TRANSIENT
