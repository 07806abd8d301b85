"""The model artifact: the one contract between the trainer (writer) and the worker (reader).

An artifact is a directory::

    artifact.json   schema version, kind, model version (content hash), window length,
                    normalisation, threshold and the rule that chose it, metrics, data
                    fingerprint, training-error quantiles, library versions, creation time
    model.keras     the Keras model, for people and tools that want Keras
    weights.npz     (ECG only) the dense stack's kernels and biases, which the worker
                    scores with in numpy so that it never imports TensorFlow

Loading validates everything and names the missing or wrong field. Publishing is atomic:
the new directory is written under a unique temporary name, verified (loaded back) while
the old one still serves, then exchanged with it in one ``renameat2(RENAME_EXCHANGE)``, so
there is no moment without an artifact at the path and concurrent trainers never share a
temporary name. A reader opens the directory once and reads ``artifact.json`` and
``weights.npz`` through that handle, so it never pairs files of two artifacts; the weights'
sha256 in ``artifact.json`` (``files``) catches a corrupt or foreign ``weights.npz``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from worker.core.errors import ArtifactError

SCHEMA_VERSION = 1
ARTIFACT_FILE = "artifact.json"
MODEL_FILE = "model.keras"
WEIGHTS_FILE = "weights.npz"
ECG_KIND = "ecg-autoencoder"
ACTIVATIONS = ("relu", "sigmoid", "linear")
# Quantiles of the training reconstruction error stored for drift monitoring (0, 1, ..., 100 %).
QUANTILE_LEVELS = tuple(float(q) for q in range(101))
# Top-level metadata that records how a run went, not what the model is: left out of the
# content hash so the same data, settings and seed give the same model_version.
# path and model_version of an artifact not yet written.
UNSAVED = "<unsaved>"
# artifact.json fields save_ecg_artifact derives from the EcgArtifact's own fields.
ECG_FIELDS = frozenset(
    {
        "schema_version",
        "kind",
        "model_version",
        "created_at",
        "window_length",
        "normalisation",
        "threshold",
        "threshold_rule",
        "profile",
        "training_error_quantiles",
    }
)
# ``files`` (sha256 of the weights file) is derived from the hashed weights.
UNHASHED_KEYS = frozenset({"created_at", "run", "files"})
# A reader retries when a publish deleted the directory it had opened (rare, immediate).
_READ_ATTEMPTS = 5


@dataclass(frozen=True)
class DenseLayer:
    """One fully connected layer: ``activation(x @ kernel + bias)``."""

    kernel: np.ndarray
    bias: np.ndarray
    activation: str

    def __eq__(self, other: object) -> bool:
        """Same activation and bit-identical float32 weights (arrays need ``array_equal``)."""
        if not isinstance(other, DenseLayer):
            return NotImplemented
        return (
            self.activation == other.activation
            and self.kernel.dtype == other.kernel.dtype
            and self.bias.dtype == other.bias.dtype
            and np.array_equal(self.kernel, other.kernel)
            and np.array_equal(self.bias, other.bias)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays: not hashable


@dataclass(frozen=True)
class Normalisation:
    """Global min-max normalisation fitted on the training split."""

    min: float
    max: float

    def apply(self, windows: np.ndarray) -> np.ndarray:
        """Scale raw windows to the model's input range, as float32 like the tutorial."""
        scale = np.float32(self.max - self.min)
        return (windows.astype(np.float32) - np.float32(self.min)) / scale


@dataclass(frozen=True)
class EcgArtifact:
    """A loaded, validated ECG autoencoder artifact."""

    path: Path
    model_version: str
    window_length: int
    normalisation: Normalisation
    threshold: float
    threshold_rule: str
    profile: str
    training_error_quantiles: tuple[float, ...]
    layers: tuple[DenseLayer, ...]
    metadata: Mapping[str, Any] = field(repr=False)

    @classmethod
    def unsaved(
        cls,
        layers: Sequence[DenseLayer],
        normalisation: Normalisation,
        threshold: float,
        *,
        threshold_rule: str = "",
        profile: str = "",
        training_error_quantiles: Sequence[float] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> EcgArtifact:
        """An artifact in memory, before ``save_ecg_artifact`` gives it a path and version.

        The window length is the model's input width; missing quantiles are zeros.
        """
        quantiles = training_error_quantiles
        return cls(
            path=Path(UNSAVED),
            model_version=UNSAVED,
            window_length=int(layers[0].kernel.shape[0]),
            normalisation=normalisation,
            threshold=threshold,
            threshold_rule=threshold_rule,
            profile=profile,
            training_error_quantiles=tuple(
                float(q) for q in (quantiles if quantiles is not None else [0.0] * 101)
            ),
            layers=tuple(layers),
            metadata=dict(metadata or {}),
        )


# --------------------------------------------------------------------------- reading


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``artifact.json`` of any artifact kind (ECG or image models)."""
    directory = Path(path)
    (raw,) = _read_files(directory, (ARTIFACT_FILE,))
    return _parse_metadata(directory, raw)


def _parse_metadata(directory: Path, raw: bytes | None) -> dict[str, Any]:
    meta_path = directory / ARTIFACT_FILE
    if raw is None:
        raise ArtifactError(f"{meta_path}: missing (is {directory} an artifact directory?)")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{meta_path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: top level must be an object")
    version = _field(meta, meta_path, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{meta_path}: unknown schema_version {version!r} (this build reads {SCHEMA_VERSION})"
        )
    _field(meta, meta_path, "kind", str)
    _field(meta, meta_path, "model_version", str)
    return meta


def _read_files(directory: Path, names: Sequence[str]) -> list[bytes | None]:
    """The bytes of ``names`` (None when missing), all read through one handle on the
    directory: a publish that exchanges the directory meanwhile cannot mix two artifacts."""
    for _ in range(_READ_ATTEMPTS):
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ArtifactError(f"{directory}: artifact directory does not exist") from exc
        except OSError as exc:
            raise ArtifactError(f"{directory}: cannot open ({exc.strerror})") from exc
        try:
            out = [_read_at(fd, directory / name) for name in names]
            replaced = None in out and _inode(directory) != os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if not replaced:
            return out
    raise ArtifactError(f"{directory}: replaced while being read {_READ_ATTEMPTS} times")


def _read_at(dir_fd: int, path: Path) -> bytes | None:
    try:
        fd = os.open(path.name, os.O_RDONLY, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot open ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from exc


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def load_ecg_artifact(
    path: str | os.PathLike[str], window_length: int | None = None
) -> EcgArtifact:
    """Load and validate an ECG artifact; optionally require a given window length.

    Raises ``ArtifactError`` naming the file and the missing or wrong field.
    """
    directory = Path(path)
    raw_meta, raw_weights = _read_files(directory, (ARTIFACT_FILE, WEIGHTS_FILE))
    meta = _parse_metadata(directory, raw_meta)
    where = directory / ARTIFACT_FILE
    if meta["kind"] != ECG_KIND:
        raise ArtifactError(f"{where}: kind is {meta['kind']!r}, expected {ECG_KIND!r}")
    length = _field(meta, where, "window_length", int)
    if length <= 0:
        raise ArtifactError(f"{where}: window_length must be positive, got {length}")
    if window_length is not None and length != window_length:
        raise ArtifactError(f"{where}: window_length is {length}, but {window_length} was expected")
    norm = _field(meta, where, "normalisation", dict)
    lo = _number(norm, where, "normalisation.min")
    hi = _number(norm, where, "normalisation.max")
    if not hi > lo:
        raise ArtifactError(f"{where}: normalisation.max ({hi}) must exceed min ({lo})")
    threshold = _number(meta, where, "threshold")
    quantiles = _field(meta, where, "training_error_quantiles", list)
    if len(quantiles) != len(QUANTILE_LEVELS) or not all(
        isinstance(q, int | float) for q in quantiles
    ):
        raise ArtifactError(
            f"{where}: training_error_quantiles must be {len(QUANTILE_LEVELS)} numbers"
        )
    layers = _load_dense_layers(directory, meta, where, raw_weights)
    if layers[0].kernel.shape[0] != length or layers[-1].kernel.shape[1] != length:
        raise ArtifactError(
            f"{directory / WEIGHTS_FILE}: model maps {layers[0].kernel.shape[0]} -> "
            f"{layers[-1].kernel.shape[1]} samples, artifact says window_length {length}"
        )
    return EcgArtifact(
        path=directory,
        model_version=meta["model_version"],
        window_length=length,
        normalisation=Normalisation(min=lo, max=hi),
        threshold=threshold,
        threshold_rule=_field(meta, where, "threshold_rule", str),
        profile=_field(meta, where, "profile", str),
        training_error_quantiles=tuple(float(q) for q in quantiles),
        layers=layers,
        metadata=meta,
    )


def _load_dense_layers(
    directory: Path, meta: dict[str, Any], where: Path, raw: bytes | None
) -> tuple[DenseLayer, ...]:
    model = _field(meta, where, "model", dict)
    activations = model.get("activations")
    if not isinstance(activations, list) or not activations:
        raise ArtifactError(f"{where}: missing field 'model.activations'")
    for act in activations:
        if act not in ACTIVATIONS:
            raise ArtifactError(f"{where}: unknown activation {act!r} in model.activations")
    weights_path = directory / WEIGHTS_FILE
    if raw is None:
        raise ArtifactError(f"{weights_path}: missing")
    expected = (
        meta.get("files", {}).get(WEIGHTS_FILE) if isinstance(meta.get("files"), dict) else None
    )
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise ArtifactError(
            f"{weights_path}: sha256 differs from the one in {ARTIFACT_FILE} (corrupt, or "
            "copied from another artifact)"
        )
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{weights_path}: not a readable .npz ({exc})") from exc
    layers = []
    width: int | None = None
    for i, act in enumerate(activations):
        kernel, bias = arrays.get(f"kernel_{i}"), arrays.get(f"bias_{i}")
        if kernel is None or bias is None:
            raise ArtifactError(f"{weights_path}: missing kernel_{i} or bias_{i}")
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
            raise ArtifactError(
                f"{weights_path}: layer {i} has bad shapes {kernel.shape}/{bias.shape}"
            )
        if width is not None and kernel.shape[0] != width:
            raise ArtifactError(
                f"{weights_path}: layer {i} expects {kernel.shape[0]} inputs, got {width}"
            )
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            # A model with NaN weights would score NaN and never flag anything.
            raise ArtifactError(f"{weights_path}: layer {i} holds NaN or infinite weights")
        width = kernel.shape[1]
        layers.append(DenseLayer(kernel.astype(np.float32), bias.astype(np.float32), act))
    return tuple(layers)


def _field(meta: Mapping[str, Any], where: Path, name: str, kind: type) -> Any:
    if name not in meta:
        raise ArtifactError(f"{where}: missing field {name!r}")
    value = meta[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(
            f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _number(meta: Mapping[str, Any], where: Path, dotted: str) -> float:
    name = dotted.rsplit(".", 1)[-1]
    if name not in meta:
        raise ArtifactError(f"{where}: missing field {dotted!r}")
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise ArtifactError(f"{where}: field {dotted!r} must be a finite number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- writing


def dense_stack(model: Any) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Flatten a Keras model made only of Dense layers (possibly nested) to (kernel, bias, act)."""
    out: list[tuple[np.ndarray, np.ndarray, str]] = []

    def walk(layer: Any) -> None:
        inner = getattr(layer, "layers", None)
        if inner is not None:
            for sub in inner:
                walk(sub)
            return
        kind = type(layer).__name__
        if kind == "InputLayer":
            return
        if kind != "Dense":
            raise ArtifactError(f"model layer {layer.name!r} is {kind}; only Dense is supported")
        act = layer.get_config()["activation"]
        if act not in ACTIVATIONS:
            raise ArtifactError(f"model layer {layer.name!r} has unsupported activation {act!r}")
        kernel, bias = layer.get_weights()
        out.append((np.asarray(kernel, np.float32), np.asarray(bias, np.float32), act))

    walk(model)
    if not out:
        raise ArtifactError("model has no Dense layers")
    return out


def write_artifact(
    out_dir: str | os.PathLike[str],
    model: Any,
    metadata: Mapping[str, Any],
    *,
    dense_weights: bool = False,
    layers: Sequence[DenseLayer] | None = None,
) -> dict[str, Any]:
    """Write ``model`` and ``metadata`` as an artifact directory, atomically.

    ``metadata`` must contain ``kind``; a top-level ``run`` section (wall time and other
    provenance) is stored but not hashed. ``schema_version``, ``model_version`` (a content
    hash of the weights and metadata), ``created_at`` and, with ``dense_weights``, the
    ``model.activations`` list are filled in here. Returns the metadata as written.
    An existing artifact at ``out_dir`` is replaced. ``layers`` (with ``dense_weights``)
    gives the dense stack directly; ``model`` may then be ``None`` (no ``model.keras``).
    ECG artifacts are written through ``save_ecg_artifact``.
    """
    if "kind" not in metadata:
        raise ArtifactError("artifact metadata needs a 'kind'")
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **metadata}
    digest = hashlib.sha256()
    arrays: dict[str, np.ndarray] = {}
    if dense_weights:
        stack = (
            dense_stack(model)
            if layers is None
            else [(lay.kernel, lay.bias, lay.activation) for lay in layers]
        )
        meta["model"] = {**meta.get("model", {}), "activations": [a for _, _, a in stack]}
        for i, (kernel, bias, _) in enumerate(stack):
            arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel, bias
    else:
        for i, w in enumerate(model.get_weights()):
            arrays[f"w_{i}"] = np.asarray(w)
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    hashed = {k: v for k, v in meta.items() if k not in UNHASHED_KEYS}
    digest.update(json.dumps(hashed, sort_keys=True, default=str).encode())
    meta["model_version"] = digest.hexdigest()[:16]
    meta["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # mkdtemp makes the directory private (0700); give it the permissions a plain
        # mkdir would, so a worker running as another user can read the artifact.
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        if model is not None:
            model.save(staging / MODEL_FILE)
        if dense_weights:
            np.savez(staging / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
            digest_file = hashlib.sha256((staging / WEIGHTS_FILE).read_bytes()).hexdigest()
            meta["files"] = {WEIGHTS_FILE: digest_file}
        (staging / ARTIFACT_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n",
            encoding="utf-8",
        )
        # Verify before the old artifact is touched: a bad write leaves it serving.
        if meta["kind"] == ECG_KIND and dense_weights:
            load_ecg_artifact(staging)
        else:
            read_metadata(staging)
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _publish(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an existing ``target`` is exchanged atomically (then
    deleted) where the OS can, else moved to a unique name first (a short gap)."""
    if not (target.exists() or target.is_symlink()):
        try:
            staging.rename(target)
            return
        except OSError as exc:  # another trainer published first: exchange with it
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if not _exchange(staging, target):
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        target.rename(old)  # replaces the empty, uniquely named directory
        staging.rename(target)
        staging = old
    shutil.rmtree(staging, ignore_errors=True)  # now holds the previous artifact


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False where
    that is not available (other systems, old kernels, some filesystems)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")


def save_ecg_artifact(
    artifact: EcgArtifact,
    out_dir: str | os.PathLike[str],
    *,
    keras_model: Any = None,
    reference_windows: np.ndarray | None = None,
) -> EcgArtifact:
    """Write an ECG artifact (``weights.npz`` + ``artifact.json``, and ``model.keras`` when
    ``keras_model`` is given) atomically, and return it loaded back from ``out_dir``.

    ``artifact.metadata`` adds the provenance sections (data, metrics, training, library
    versions, ``run``); the fields ``EcgArtifact`` defines are written from the artifact.
    ``model_version`` is the content hash of weights and metadata, as in ``write_artifact``.
    A ``self_test`` section (``worker.core.selftest``) records this model's errors on
    ``reference_windows`` (default: deterministic windows in the model's input range).
    """
    from worker.core.selftest import SECTION, reference_section  # selftest imports this module

    extra = {k: v for k, v in artifact.metadata.items() if k not in ECG_FIELDS}
    extra[SECTION] = reference_section(artifact, reference_windows)
    meta: dict[str, Any] = {
        **extra,
        "kind": ECG_KIND,
        "window_length": artifact.window_length,
        "normalisation": {"min": artifact.normalisation.min, "max": artifact.normalisation.max},
        "threshold": artifact.threshold,
        "threshold_rule": artifact.threshold_rule,
        "profile": artifact.profile,
        "training_error_quantiles": list(artifact.training_error_quantiles),
        "model": {
            **extra.get("model", {}),
            "activations": [layer.activation for layer in artifact.layers],
        },
    }
    write_artifact(out_dir, keras_model, meta, dense_weights=True, layers=artifact.layers)
    return load_ecg_artifact(out_dir, artifact.window_length)


def error_quantiles(errors: Sequence[float] | np.ndarray) -> list[float]:
    """The training-error quantiles stored in the artifact for drift monitoring."""
    return [float(v) for v in np.percentile(np.asarray(errors, np.float64), QUANTILE_LEVELS)]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
