"""State of the reference model server: its settings, the loaded model, metrics and recent predictions."""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from modelrelease_trainer import artifact
from modelrelease_trainer.exit_codes import ConfigError, DataError
from modelrelease_trainer.export import SAVED_MODEL_DIR

log = logging.getLogger(__name__)
# Fine-grained from 1 ms to 10 s so p99 stays readable both for a fast CPU model and an injected delay.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15,
                   0.25, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0, 5.0, 7.5, 10.0)
CONFIDENCE_BUCKETS = tuple(round(0.1 + 0.05 * i, 2) for i in range(19))  # 0.1, 0.15, ..., 1.0
LABELS = ("model", "version", "track")


@dataclass(frozen=True)
class ServerConfig:
    model_path: str
    host: str = "0.0.0.0"
    port: int = 8501
    name: str = "model"
    version: str | None = None
    """None: the version recorded in the artifact's result.json, else computed from the weights."""
    track: str = "stable"
    inject_error_rate: float = 0.0
    inject_latency_ms: float = 0.0
    inject_seed: int | None = None
    feedback_cache_size: int = 10_000
    max_instances: int = 1024
    max_body_bytes: int = 8 * 1024 * 1024
    read_timeout_s: float = 30.0
    """How long a client may leave the server waiting: for any one read, and for a whole request body.
    Also how long an idle keep-alive connection stays open. Env READ_TIMEOUT_SECONDS."""


def resolve_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> ServerConfig:
    """Flags override the environment, which overrides the defaults."""

    def pick(flag_value: Any, env_name: str, convert: Any, default: Any) -> Any:
        if flag_value is not None:
            return flag_value
        raw = environ.get(env_name, "").strip()
        if not raw:
            return default
        try:
            return convert(raw)
        except ValueError:
            raise ConfigError(f"environment variable {env_name}={raw!r} is not a valid {convert.__name__}") from None

    model_path = pick(args.model, "MODEL_PATH", str, None)
    if not model_path:
        raise ConfigError("serve needs --model DIR (or env MODEL_PATH): a trained stage's --output folder")
    config = ServerConfig(
        model_path=model_path,
        host=args.host or ServerConfig.host,
        port=ServerConfig.port if args.port is None else args.port,
        name=pick(args.name, "MODEL_NAME", str, ServerConfig.name),
        version=pick(args.version, "MODEL_VERSION", str, None),
        track=pick(args.track, "RELEASE_TRACK", str, ServerConfig.track),
        inject_error_rate=pick(args.inject_error_rate, "INJECT_ERROR_RATE", float, 0.0),
        inject_latency_ms=pick(args.inject_latency_ms, "INJECT_LATENCY_MS", float, 0.0),
        inject_seed=pick(args.inject_seed, "INJECT_SEED", int, None),
        feedback_cache_size=pick(
            args.feedback_cache_size, "FEEDBACK_CACHE_SIZE", int, ServerConfig.feedback_cache_size
        ),
        read_timeout_s=pick(args.read_timeout, "READ_TIMEOUT_SECONDS", float,
                            ServerConfig.read_timeout_s),
    )
    if not 0.0 <= config.inject_error_rate <= 1.0:
        raise ConfigError(f"--inject-error-rate must be in [0, 1], got {config.inject_error_rate}")
    if not 0.0 <= config.inject_latency_ms < math.inf:
        raise ConfigError(f"--inject-latency-ms must be >= 0, got {config.inject_latency_ms}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {config.port}")
    if not 0.0 < config.read_timeout_s < math.inf:
        raise ConfigError(f"READ_TIMEOUT_SECONDS must be above 0 seconds, got {config.read_timeout_s}")
    if config.feedback_cache_size < 1:
        raise ConfigError(f"--feedback-cache-size must be >= 1, got {config.feedback_cache_size}")
    if not config.name or "/" in config.name or ":" in config.name:
        raise ConfigError(f"--name {config.name!r} must be non-empty without '/' or ':' (it is part of URLs)")
    return config


class ServerMetrics:
    """Prometheus series, all labelled model, version and track, in a registry of their own."""

    def __init__(self, model: str, version: str, track: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"model": model, "version": version, "track": track}
        self.requests = Counter("modelserver_requests", "Predict requests by HTTP status.",
                                [*LABELS, "code"], registry=self.registry)
        self.duration = Histogram("modelserver_request_duration_seconds", "Predict latency.", LABELS,
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.confidence = Histogram("modelserver_prediction_confidence", "Top class probability per instance.",
                                    LABELS, buckets=CONFIDENCE_BUCKETS, registry=self.registry)
        self.feedback = Counter("modelserver_feedback", "Predictions scored by feedback labels.",
                                [*LABELS, "outcome"], registry=self.registry)
        self.initialise()

    def initialise(self) -> None:
        """Create the series at zero, so ratios in PromQL have a denominator before the first error."""
        for code in ("200", "500"):
            self.requests.labels(**self.labels, code=code)
        self.duration.labels(**self.labels)
        self.confidence.labels(**self.labels)
        for outcome in ("correct", "incorrect"):
            self.feedback.labels(**self.labels, outcome=outcome)

    def record_predict(self, code: int, seconds: float) -> None:
        self.requests.labels(**self.labels, code=str(code)).inc()
        self.duration.labels(**self.labels).observe(seconds)

    def record_confidence(self, top_probabilities: np.ndarray) -> None:
        child = self.confidence.labels(**self.labels)
        for value in top_probabilities.tolist():
            child.observe(value)

    def record_feedback(self, correct: int, incorrect: int) -> None:
        self.feedback.labels(**self.labels, outcome="correct").inc(correct)
        self.feedback.labels(**self.labels, outcome="incorrect").inc(incorrect)


class PredictionLog:
    """The classes of recent predictions by request id, for feedback; the oldest fall out first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, classes: list[int]) -> None:
        with self._lock:
            self._entries[request_id] = classes
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def get(self, request_id: str) -> list[int] | None:
        with self._lock:
            return self._entries.get(request_id)

    def take(self, request_id: str) -> list[int] | None:
        """Remove and return: each prediction is scored once."""
        with self._lock:
            return self._entries.pop(request_id, None)


SAVED_MODEL_FILE = "saved_model.pb"
SERVING_SIGNATURE = "serving_default"
_VERSION_FOLDER = re.compile(r"[0-9]+")
_SAVED_MODEL_HASH_PREFIX = b"modelrelease-savedmodel-v1\n"


@dataclass(frozen=True)
class ModelLocation:
    """What --model points at, resolved: a .keras file or a SavedModel folder, and its artifact folder."""

    kind: str
    """"keras" or "saved_model"."""
    path: Path
    """The .keras file, or the folder holding saved_model.pb."""
    artifact_folder: Path
    """Where the trainer's result.json would be (the stage's --output folder)."""


def locate_model(location: str) -> ModelLocation:
    """Resolve --model: an artifact folder, a .keras file, a TF Serving base path or a SavedModel folder.

    An artifact folder with model.keras loads that file; one without it loads its saved_model/ base path.
    A base path (a folder of integer version folders) loads its highest version, as TensorFlow Serving does.
    """
    path = Path(location)
    if not path.is_dir():  # a .keras file; a missing path gets load_model's error, as before
        return ModelLocation("keras", artifact.model_file(path), path.parent)
    if (path / artifact.MODEL_FILE).is_file():
        return ModelLocation("keras", path / artifact.MODEL_FILE, path)
    if (path / SAVED_MODEL_FILE).is_file():
        in_base = _VERSION_FOLDER.fullmatch(path.name) and path.parent.name == SAVED_MODEL_DIR
        return ModelLocation("saved_model", path, path.parent.parent if in_base else path)
    version = _highest_version(path)
    if version is not None:
        return _version_location(version, path.parent if path.name == SAVED_MODEL_DIR else path)
    version = _highest_version(path / SAVED_MODEL_DIR) if (path / SAVED_MODEL_DIR).is_dir() else None
    if version is not None:
        return _version_location(version, path)
    raise DataError(
        f"--model: {path} has neither {artifact.MODEL_FILE} nor a SavedModel ({SAVED_MODEL_FILE}, integer "
        f"version folders, or {SAVED_MODEL_DIR}/); point it at a trained stage's --output folder"
    )


def _highest_version(base: Path) -> Path | None:
    versions = [p for p in base.iterdir() if p.is_dir() and _VERSION_FOLDER.fullmatch(p.name)]
    return max(versions, key=lambda p: int(p.name), default=None)


def _version_location(version: Path, artifact_folder: Path) -> ModelLocation:
    if not (version / SAVED_MODEL_FILE).is_file():
        raise DataError(
            f"--model: the highest version folder {version} has no {SAVED_MODEL_FILE}; "
            "remove it or finish writing it (versions are loaded highest first, as TensorFlow Serving does)"
        )
    return ModelLocation("saved_model", version, artifact_folder)


class ModelHolder:
    """Loads the model in the background, so liveness answers while TensorFlow starts."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.ready = threading.Event()
        self.failed: str | None = None
        self.num_features = 0
        self.computed_version: str | None = None
        self._predict: Any = None
        self._loaded: Any = None
        """The loaded SavedModel: its signature functions only work while it is alive."""

    def load(self, compute_version: bool) -> None:
        import tensorflow as tf

        location = locate_model(self.model_path)
        if location.kind == "saved_model":
            self._load_saved_model(location.path, compute_version)
        else:
            model = artifact.load_model(location.path, flag="--model")
            self.num_features = int(model.input_shape[-1])
            spec = tf.TensorSpec(shape=(None, self.num_features), dtype=tf.float32)
            # A traced function answers in well under a millisecond; model.predict costs tens per call.
            self._predict = tf.function(lambda x: model(x, training=False), input_signature=[spec])
            if compute_version:
                self.computed_version = artifact.model_version(model)
        self._predict(tf.zeros((1, self.num_features), tf.float32))  # trace now, not on the first request
        self.ready.set()

    def _load_saved_model(self, folder: Path, compute_version: bool) -> None:
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(folder))
        except Exception as exc:  # TensorFlow raises many kinds for a damaged protobuf or variables
            raise DataError(
                f"--model: cannot load the SavedModel {folder} ({type(exc).__name__}: {exc}); it may be corrupt"
            ) from None
        signature = self._loaded.signatures.get(SERVING_SIGNATURE)
        if signature is None:
            raise DataError(
                f"--model: the SavedModel {folder} has no {SERVING_SIGNATURE!r} signature "
                f"(it has {', '.join(self._loaded.signatures) or 'none'}); export it with one"
            )
        input_name, spec = _single_input(signature, folder)
        output_name = _probabilities_output(signature, folder)
        self.num_features = int(spec.shape[1])
        self._predict = lambda x: signature(**{input_name: tf.cast(x, spec.dtype)})[output_name]
        if compute_version:
            self.computed_version = _saved_model_version(signature)

    def predict(self, instances: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(instances), dtype=np.float32)


def _single_input(signature: Any, folder: Path) -> tuple[str, Any]:
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise DataError(f"--model: the {SERVING_SIGNATURE} signature of {folder} must take one input, "
                        f"it takes {sorted(inputs) or 'none'}")
    ((name, spec),) = inputs.items()
    if spec.shape.rank != 2 or spec.shape[1] is None or not spec.dtype.is_floating:
        raise DataError(f"--model: the {SERVING_SIGNATURE} input {name!r} of {folder} must be floats of shape "
                        f"[None, features], it is {spec.dtype.name} {spec.shape}")
    return name, spec


def _probabilities_output(signature: Any, folder: Path) -> str:
    outputs = signature.structured_outputs
    if "probabilities" in outputs:
        return "probabilities"
    if len(outputs) == 1:
        return str(next(iter(outputs)))
    raise DataError(f"--model: the {SERVING_SIGNATURE} signature of {folder} returns {sorted(outputs)}; "
                    "name the class probabilities 'probabilities'")


def _saved_model_version(signature: Any) -> str:
    """A version id from a SavedModel's weights. It differs from the Keras model's id for the same weights
    (another format); a trained stage's server reads the id from result.json instead."""
    digest = hashlib.sha256(_SAVED_MODEL_HASH_PREFIX)
    for variable in signature.variables:
        array = np.ascontiguousarray(variable.numpy())
        digest.update(f"\n{variable.name}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def artifact_version(model_path: str) -> str | None:
    """The version the trainer recorded for the model --model points at, if its result.json is there."""
    try:
        folder = locate_model(model_path).artifact_folder
    except (DataError, OSError):
        return None  # the loader reports the problem
    return artifact.recorded_version(folder)
