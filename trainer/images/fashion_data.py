"""Fashion-MNIST: find the four IDX files, load them, scale the images to float32 [0, 1].

Lookup order (the first directory holding all four files wins):

1. ``--data DIR`` given by the user (when given, it must hold the files: a wrong path is an
   error, never silently replaced by another copy);
2. the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
3. the Keras cache (``$KERAS_HOME`` or ``~/.keras``, then ``datasets/fashion-mnist``);
4. the standard download (the URLs ``keras.datasets.fashion_mnist`` uses), saved into the
   Keras cache so the next run finds it there.

The candidate directories and the downloader are parameters so tests can check the order
without internet. When nothing works, one ``DataError`` lists every attempt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.download import download_to as http_download
from trainer.images.idx import read_idx
from worker.core.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SIDE = 28
NUM_CLASSES = 10
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_LABELS, TRAIN_IMAGES, TEST_LABELS, TEST_IMAGES)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
INSTALL_HINT = "install it with: apt-get install dataset-fashion-mnist"

# download(url, destination): fetch one file; raise OSError (URLError is one) on failure.
Downloader = Callable[[str, Path], None]


@dataclass(frozen=True)
class FashionMnist:
    """The data set: images float32 in [0, 1] of shape (N, 28, 28), labels uint8 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # "data-dir", "debian-package", "keras-cache" or "download"
    location: str  # the directory the files were read from
    sha256: dict[str, str]  # file name -> sha256 of the file as read

    def limited(self, train_limit: int | None, test_limit: int | None) -> FashionMnist:
        """The first ``train_limit`` / ``test_limit`` examples (``None``: all)."""
        return FashionMnist(
            x_train=self.x_train[:train_limit],
            y_train=self.y_train[:train_limit],
            x_test=self.x_test[:test_limit],
            y_test=self.y_test[:test_limit],
            source=self.source,
            location=self.location,
            sha256=self.sha256,
        )


def keras_cache_dir() -> Path:
    """Where ``keras.datasets.fashion_mnist`` caches the files (honours ``KERAS_HOME``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "datasets" / "fashion-mnist"


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    system_dir: Path | None = SYSTEM_DIR,
    cache_dir: Path | None = None,
    download: Downloader | None = http_download,
    base_url: str = BASE_URL,
) -> FashionMnist:
    """Find and load Fashion-MNIST in the documented order; see the module docstring.

    ``cache_dir`` defaults to the Keras cache; ``system_dir=None`` skips the Debian
    location and ``download=None`` disables the download. A directory that holds the files
    but whose files are malformed is an error, never silently skipped.
    """
    cache = keras_cache_dir() if cache_dir is None else Path(cache_dir)
    if data_dir is not None:
        given = Path(data_dir)
        missing = [name for name in FILES if not (given / name).is_file()]
        if missing:
            where = given if given.is_dir() else f"{given} (no such directory)"
            raise DataError(
                f"--data {where}: missing {', '.join(missing)}; expected the four "
                "Fashion-MNIST IDX files (omit --data to use the Debian package "
                "dataset-fashion-mnist, the Keras cache or the download)"
            )
        return _load_dir(given, "data-dir")
    candidates: list[tuple[str, Path]] = []
    if system_dir is not None:
        candidates.append(("debian-package", Path(system_dir)))
    candidates.append(("keras-cache", cache))

    tried: list[str] = []
    for source, directory in candidates:
        missing = [name for name in FILES if not (directory / name).is_file()]
        if not missing:
            if tried:
                log.warning(
                    "Fashion-MNIST: using %s (%s); skipped %s", directory, source, "; ".join(tried)
                )
            return _load_dir(directory, source)
        tried.append(f"{source} {directory}: missing {', '.join(missing)}")

    if download is None:
        tried.append("download: disabled")
    else:
        try:
            _download_missing(cache, base_url, download)
        except (OSError, ValueError) as exc:
            tried.append(f"download from {base_url} into {cache}: {_reason(exc)}")
        else:
            return _load_dir(cache, "download")
    raise DataError(
        "Fashion-MNIST not found; tried: " + "; ".join(tried) + f". To work offline, {INSTALL_HINT}"
    )


def _download_missing(cache: Path, base_url: str, download: Downloader) -> None:
    for name in FILES:
        target = cache / name
        if target.is_file():
            continue
        url = base_url.rstrip("/") + "/" + name
        log.info("Fashion-MNIST: downloading %s", url)
        download(url, target)
        if not target.is_file():
            raise OSError(f"downloader reported success but {target} does not exist")


def _load_dir(directory: Path, source: str) -> FashionMnist:
    x_train = read_idx(directory / TRAIN_IMAGES, dtype=np.uint8, shape=(None, 28, 28))
    y_train = read_idx(directory / TRAIN_LABELS, dtype=np.uint8, shape=(None,))
    x_test = read_idx(directory / TEST_IMAGES, dtype=np.uint8, shape=(None, 28, 28))
    y_test = read_idx(directory / TEST_LABELS, dtype=np.uint8, shape=(None,))
    for images, labels, img_name, lbl_name in (
        (x_train, y_train, TRAIN_IMAGES, TRAIN_LABELS),
        (x_test, y_test, TEST_IMAGES, TEST_LABELS),
    ):
        if len(images) != len(labels):
            raise DataError(
                f"{directory}: {img_name} has {len(images)} images but "
                f"{lbl_name} has {len(labels)} labels"
            )
        if len(images) == 0:
            raise DataError(f"{directory / img_name}: holds no images")
        if labels.max() >= NUM_CLASSES:
            raise DataError(
                f"{directory / lbl_name}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}"
            )
    log.info(
        "Fashion-MNIST from %s (%s): %d train, %d test images",
        directory,
        source,
        len(x_train),
        len(x_test),
    )
    return FashionMnist(
        x_train=_scale(x_train),
        y_train=y_train,
        x_test=_scale(x_test),
        y_test=y_test,
        source=source,
        location=str(directory),
        sha256={name: _sha256(directory / name) for name in FILES},
    )


def _scale(images: np.ndarray) -> np.ndarray:
    # As the tutorial: x.astype('float32') / 255.
    return images.astype(np.float32) / np.float32(255.0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} for {exc.url}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    return str(exc) or type(exc).__name__
