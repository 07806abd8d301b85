"""Fashion-MNIST lookup: the order of places, the error that lists them, and the download
into the Keras cache (against a local HTTP server: no internet needed)."""

from __future__ import annotations

import functools
import gzip
import http.server
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from tests.builders import encode_idx
from trainer.images import fashion_data
from trainer.images.fashion_data import FILES, http_download, keras_cache_dir, load_fashion_mnist
from worker.core.errors import DataError

N_TRAIN, N_TEST = 6, 4


def write_dataset(directory: Path, tag: int, files: tuple[str, ...] = FILES) -> Path:
    """A tiny valid Fashion-MNIST in ``directory``; every pixel of image 0 equals ``tag``."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        fashion_data.TRAIN_IMAGES: np.full((N_TRAIN, 28, 28), tag, dtype=np.uint8),
        fashion_data.TRAIN_LABELS: np.arange(N_TRAIN, dtype=np.uint8) % 10,
        fashion_data.TEST_IMAGES: np.full((N_TEST, 28, 28), 255, dtype=np.uint8),
        fashion_data.TEST_LABELS: np.arange(N_TEST, dtype=np.uint8),
    }
    for name in files:
        (directory / name).write_bytes(gzip.compress(encode_idx(arrays[name])))
    return directory


def tag_of(data) -> int:
    return round(float(data.x_train[0, 0, 0]) * 255)


def no_download(url: str, destination: Path) -> None:
    raise AssertionError(f"must not download {url}")


def test_data_dir_wins_over_system_and_cache(tmp_path):
    given = write_dataset(tmp_path / "given", tag=1)
    system = write_dataset(tmp_path / "system", tag=2)
    cache = write_dataset(tmp_path / "cache", tag=3)
    data = load_fashion_mnist(given, system_dir=system, cache_dir=cache, download=no_download)
    assert (data.source, data.location, tag_of(data)) == ("data-dir", str(given), 1)


def test_system_package_comes_before_keras_cache(tmp_path):
    system = write_dataset(tmp_path / "system", tag=2)
    cache = write_dataset(tmp_path / "cache", tag=3)
    data = load_fashion_mnist(system_dir=system, cache_dir=cache, download=no_download)
    assert (data.source, tag_of(data)) == ("debian-package", 2)


def test_keras_cache_is_used_before_downloading(tmp_path):
    cache = write_dataset(tmp_path / "cache", tag=3)
    data = load_fashion_mnist(system_dir=tmp_path / "absent", cache_dir=cache, download=no_download)
    assert (data.source, tag_of(data)) == ("keras-cache", 3)


def test_incomplete_system_directory_is_skipped_for_the_next_one(tmp_path):
    partial = write_dataset(tmp_path / "system", tag=2, files=FILES[:3])
    cache = write_dataset(tmp_path / "cache", tag=3)
    data = load_fashion_mnist(system_dir=partial, cache_dir=cache, download=no_download)
    assert (data.source, tag_of(data)) == ("keras-cache", 3)


@pytest.mark.parametrize("files", [FILES[:3], ()])
def test_a_given_data_dir_without_the_files_is_an_error_not_replaced(tmp_path, files):
    given = write_dataset(tmp_path / "given", tag=1, files=files)
    system = write_dataset(tmp_path / "system", tag=2)
    with pytest.raises(DataError, match=r"--data .*given.*: missing .*t10k-images"):
        load_fashion_mnist(given, system_dir=system, cache_dir=tmp_path / "c")


def test_a_given_data_dir_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(DataError, match=r"nope \(no such directory\): missing"):
        load_fashion_mnist(tmp_path / "nope", system_dir=None, download=no_download)


def test_images_are_float32_in_unit_range_and_labels_kept(tmp_path):
    data = load_fashion_mnist(write_dataset(tmp_path / "d", tag=255), system_dir=None)
    assert data.x_train.dtype == np.float32
    assert data.x_train.shape == (N_TRAIN, 28, 28)
    assert data.x_train.max() == 1.0
    assert data.x_test.shape == (N_TEST, 28, 28)
    assert data.y_train.tolist() == [0, 1, 2, 3, 4, 5]
    assert set(data.sha256) == set(FILES)
    limited = data.limited(2, 3)
    assert (len(limited.x_train), len(limited.y_train), len(limited.x_test)) == (2, 2, 3)


def test_nothing_found_lists_every_attempt_and_the_debian_package(tmp_path):
    def offline(url: str, destination: Path) -> None:
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(DataError) as err:
        load_fashion_mnist(
            system_dir=tmp_path / "system",
            cache_dir=tmp_path / "cache",
            download=offline,
        )
    message = str(err.value)
    for where in ("system", "cache"):
        assert f"{tmp_path / where}: missing" in message
    assert "train-images-idx3-ubyte.gz" in message
    assert f"download from {fashion_data.BASE_URL}" in message
    assert "Name or service not known" in message
    assert "apt-get install dataset-fashion-mnist" in message
    # The order in the message is the lookup order.
    assert message.index("system") < message.index("cache")


def test_download_can_be_disabled(tmp_path):
    with pytest.raises(DataError, match="download: disabled"):
        load_fashion_mnist(system_dir=None, cache_dir=tmp_path / "cache", download=None)


def test_malformed_file_in_a_found_directory_is_an_error_not_skipped(tmp_path):
    given = write_dataset(tmp_path / "given", tag=1)
    (given / fashion_data.TEST_LABELS).write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00"))
    system = write_dataset(tmp_path / "system", tag=2)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: truncated in the header"):
        load_fashion_mnist(given, system_dir=system, download=no_download)


def test_label_count_must_match_image_count(tmp_path):
    given = write_dataset(tmp_path / "given", tag=1)
    labels = gzip.compress(encode_idx(np.zeros(N_TRAIN + 1, dtype=np.uint8)))
    (given / fashion_data.TRAIN_LABELS).write_bytes(labels)
    with pytest.raises(DataError, match=f"has {N_TRAIN} images but .* has {N_TRAIN + 1} labels"):
        load_fashion_mnist(given, system_dir=None, download=None)


def test_keras_cache_dir_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert keras_cache_dir() == tmp_path / "kh" / "datasets" / "fashion-mnist"
    monkeypatch.delenv("KERAS_HOME")
    assert keras_cache_dir() == Path.home() / ".keras" / "datasets" / "fashion-mnist"


# ------------------------------------------------------------------ download over real HTTP


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 (free port) serving a directory; yields (dir, url)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/datasets/"
    finally:
        server.shutdown()
        server.server_close()


def test_downloads_into_the_keras_cache_and_reuses_it(http_root, tmp_path):
    root, url = http_root
    write_dataset(root / "datasets", tag=7)
    cache = tmp_path / "keras" / "datasets" / "fashion-mnist"
    data = load_fashion_mnist(
        system_dir=tmp_path / "absent", cache_dir=cache, download=http_download, base_url=url
    )
    assert (data.source, data.location, tag_of(data)) == ("download", str(cache), 7)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # no temp files left
    # The next run finds the files in the cache and does not download again.
    again = load_fashion_mnist(system_dir=None, cache_dir=cache, download=no_download)
    assert (again.source, tag_of(again)) == ("keras-cache", 7)


def test_download_completes_a_partial_cache(http_root, tmp_path):
    root, url = http_root
    write_dataset(root / "datasets", tag=7)
    cache = write_dataset(tmp_path / "cache", tag=9, files=FILES[:2])
    fetched: list[str] = []

    def recording(u: str, destination: Path) -> None:
        fetched.append(u.rsplit("/", 1)[-1])
        http_download(u, destination)

    data = load_fashion_mnist(system_dir=None, cache_dir=cache, download=recording, base_url=url)
    assert fetched == list(FILES[2:])
    assert data.source == "download"


def test_http_error_is_listed_and_leaves_no_partial_file(http_root, tmp_path):
    _, url = http_root  # serves nothing: every file is a 404
    cache = tmp_path / "cache"
    with pytest.raises(
        DataError, match=r"download from http://127\.0\.0\.1:\d+/datasets/ .*HTTP 404"
    ):
        load_fashion_mnist(system_dir=None, cache_dir=cache, download=http_download, base_url=url)
    assert list(cache.iterdir()) == []
