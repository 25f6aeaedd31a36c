"""Command line: `python -m modelrelease_trainer train|serve`.

build_parser() only describes the flags (no TensorFlow import, no file or network access), so the
operator's Job builder can be checked against it. A bad flag raises UsageError, a SystemExit with code
64, instead of argparse's usual exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from modelrelease_trainer import exit_codes
from modelrelease_trainer.distributed import MAX_WORKERS  # plain Python: no TensorFlow at parse time
from modelrelease_trainer.exit_codes import ConfigError, TrainerError, TransientError
from modelrelease_trainer.sources import parse_source

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
log = logging.getLogger("modelrelease_trainer")


class UsageError(SystemExit):
    """A flag is missing or has a bad value."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(exit_codes.CONFIG_ERROR)
        self.message = message
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _number(kind: Callable[[str], Any], check: Callable[[Any], bool], rule: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {rule}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {rule}")
        return value

    return convert


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < float("inf"), "a number > 0")
non_negative_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
open_fraction = _number(float, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")
probability = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
port_number = _number(int, lambda v: 0 <= v <= 65535, "a port number (0 picks a free one)")
worker_count = _number(int, lambda v: 1 <= v <= MAX_WORKERS, f"an integer from 1 to {MAX_WORKERS}")


def data_source(text: str) -> str:
    """Validate the --data syntax now (no file access); keep the string as given."""
    try:
        parse_source(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--data {text!r}: ")) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m modelrelease_trainer", description="Train a model stage or serve a model.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,serve}")
    _add_train(commands.add_parser("train", help="train one stage and write its result"))
    _add_serve(commands.add_parser("serve", help="serve a trained model over HTTP"))
    return parser


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", required=True, help="stage name, reported in the result")
    p.add_argument("--data", required=True, type=data_source,
                   help="PATH (.npz/.csv file or folder), file:PATH or sklearn:digits, with ?fraction=X")
    p.add_argument("--output", required=True,
                   help="folder for model.keras, metrics.json, result.json, saved_model/ and checkpoint/ "
                        "(written by worker 0 only)")
    p.add_argument("--init-from", default=None, help="a previous stage's --output folder to continue from")
    p.add_argument("--epochs", type=non_negative_int, default=5, help="0 evaluates --init-from as is")
    p.add_argument("--batch-size", type=positive_int, default=32, help="global batch size (all GPUs together)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    p.add_argument("--learning-rate", type=positive_float, default=0.001)
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="decoupled weight decay")
    p.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                   help="auto: float16 when a GPU is visible")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seeds the split, weights and shuffling")
    p.add_argument("--eval-fraction", type=open_fraction, default=0.2, help="share of the data held out")
    p.add_argument("--workers", type=worker_count, default=1,
                   help="workers training together; above 1 each finds the others in TF_CONFIG, or in "
                        "TRAINER_WORKER_HOSTS and JOB_COMPLETION_INDEX (an Indexed Job's pods)")
    p.add_argument("--termination-log", default=None,
                   help=f"where the result goes (default: $TERMINATION_LOG or {DEFAULT_TERMINATION_LOG})")


def _add_serve(p: argparse.ArgumentParser) -> None:
    # Defaults of None fall back to the environment (see serving.resolve_config): env sets, flags override.
    p.add_argument("--model", default=None,
                   help="artifact folder, .keras file, SavedModel folder or TF Serving base path (env MODEL_PATH)")
    p.add_argument("--port", type=port_number, default=None, help="default 8501; 0 picks a free port")
    p.add_argument("--host", default=None, help="default 0.0.0.0")
    p.add_argument("--name", default=None, help="model name in URLs and metrics (env MODEL_NAME, default model)")
    p.add_argument("--version", default=None, help="version label (env MODEL_VERSION, default from result.json)")
    p.add_argument("--track", default=None, help="track label, e.g. stable or canary (env RELEASE_TRACK)")
    p.add_argument("--inject-error-rate", type=probability, default=None,
                   help="answer 500 to this share of predicts (env INJECT_ERROR_RATE, default 0)")
    p.add_argument("--inject-latency-ms", type=non_negative_float, default=None,
                   help="delay every predict (env INJECT_LATENCY_MS, default 0)")
    p.add_argument("--inject-seed", type=int, default=None, help="seed of the fault injection (env INJECT_SEED)")
    p.add_argument("--feedback-cache-size", type=positive_int, default=None,
                   help="recent predictions kept for feedback (env FEEDBACK_CACHE_SIZE, default 10000)")
    p.add_argument("--read-timeout", type=positive_float, default=None,
                   help="seconds a client may leave a read waiting, and a whole body may take (env "
                        "READ_TIMEOUT_SECONDS, default 30): then 408")


def termination_log_path(explicit: str | None) -> str:
    return explicit or os.environ.get("TERMINATION_LOG") or DEFAULT_TERMINATION_LOG


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        if argv[:1] == ["train"]:  # the Job's failure must reach the operator too
            failure = _failure(_flag_value(argv, "--stage"), exc.code, exc.message)
            _report(_flag_value(argv, "--termination-log"), failure)
        else:
            print(f"{exc.prog}: error: {exc.message}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    if args.command == "train":
        return run_train(args)
    from modelrelease_trainer.serve import run_serve  # imports TensorFlow

    return run_serve(args)


def run_train(args: argparse.Namespace) -> int:
    from modelrelease_trainer import result

    try:
        with _sigterm_as_transient():
            from modelrelease_trainer.artifact import RESULT_FILE, write_json
            from modelrelease_trainer.train import TrainConfig, train

            config = TrainConfig.from_args(args)
            outcome = train(config, report_stuck=_stuck_reporter(args))
            report = result.success_result(
                stage=config.stage, version=outcome.version, artifact_path=outcome.artifact_path,
                metrics=outcome.metrics, data_source=config.data, init_from=config.init_from,
                optimizer=config.optimizer, epochs=config.epochs, mixed_precision=outcome.mixed_precision,
                workers=outcome.workers, epochs_run=outcome.epochs_run,
                resumed_from_epoch=outcome.resumed_from_epoch, data_hash=outcome.data_hash,
            )
            if outcome.is_chief:  # the artifact describes itself; other workers write nothing there
                write_json(config.output, RESULT_FILE, report)
    except TrainerError as exc:
        report = _failure(args.stage, exc.exit_code, str(exc))
    except MemoryError:
        report = _failure(args.stage, exit_codes.TRANSIENT, "out of memory; lower --batch-size or give more memory")
    except OSError as exc:  # I/O trouble we did not wrap is most likely the environment's
        traceback.print_exc()
        report = _failure(args.stage, exit_codes.TRANSIENT, f"I/O error: {exc}")
    except Exception as exc:
        traceback.print_exc()
        report = _failure(args.stage, exit_codes.UNEXPECTED, f"unexpected {type(exc).__name__}: {exc}")
    _report(args.termination_log, report)
    return int(report.get("exitCode", exit_codes.OK))


def _stuck_reporter(args: argparse.Namespace) -> Callable[[str | None], None]:
    """Write the failure a stuck start would end in to the termination log ahead of time (the process is
    then ended from outside the interpreter), or clear it once the start went well."""

    def report(message: str | None) -> None:
        path = termination_log_path(args.termination_log)
        if message is None:
            from modelrelease_trainer.result import write_atomically

            with contextlib.suppress(OSError):
                write_atomically(path, "")
            return
        _report(args.termination_log, _failure(args.stage, exit_codes.TRANSIENT, message))

    return report


def _failure(stage: str | None, code: Any, message: str) -> Any:
    from modelrelease_trainer.result import failure_result

    return failure_result(stage=stage, exit_code=int(code), message=message)


def _report(explicit_path: str | None, report: Any) -> None:
    """Print the result as the last stdout line and write it to the termination log."""
    from modelrelease_trainer.result import encode_result, write_atomically

    text = encode_result(report)
    print(text, flush=True)
    if not report.get("ok"):
        print(f"error: {report.get('error')}", file=sys.stderr)
    path = termination_log_path(explicit_path)
    try:
        write_atomically(path, text)
    except OSError as exc:
        log.warning("could not write the result to %s (%s); it is on stdout", path, exc)


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    """A flag's value from argv when parsing failed (for --stage and --termination-log)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@contextmanager
def _sigterm_as_transient() -> Iterator[None]:
    """Kubernetes stops a pod with SIGTERM (eviction, preemption): report it as retryable."""

    def stop(signum: int, frame: object) -> None:
        raise TransientError("stopped by SIGTERM (pod evicted or deleted); retry")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (in-process callers); leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
