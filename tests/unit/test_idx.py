"""IDX parsing: values and shapes from hand-built bytes, and a clear DataError for bad files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from tests.builders import encode_idx
from trainer.images.idx import parse_idx, read_idx
from worker.core.errors import DataError

# A 2 x 3 ubyte array, written out byte by byte as in the IDX spec.
SMALL_UBYTE = bytes.fromhex("000008020000000200000003") + bytes([0, 1, 2, 3, 254, 255])


def test_parses_hand_built_ubyte_matrix():
    array = parse_idx(SMALL_UBYTE)
    assert array.dtype == np.uint8
    assert array.shape == (2, 3)
    assert array.tolist() == [[0, 1, 2], [3, 254, 255]]


def test_big_endian_values_come_back_in_native_order():
    raw = bytes.fromhex("00000c0100000002") + struct.pack(">2i", 70000, -5)
    array = parse_idx(raw)
    assert array.dtype == np.dtype("int32")
    assert array.dtype.isnative
    assert array.tolist() == [70000, -5]
    floats = parse_idx(bytes.fromhex("00000d0100000001") + struct.pack(">f", 0.25))
    assert floats.tolist() == [0.25]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_encode_then_parse_round_trips_every_idx_type(dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    back = parse_idx(encode_idx(array))
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_encode_matches_the_spec_bytes():
    assert encode_idx(np.array([[0, 1, 2], [3, 254, 255]], dtype=np.uint8)) == SMALL_UBYTE


def test_encode_rejects_types_idx_cannot_store():
    with pytest.raises(ValueError, match="cannot store"):
        encode_idx(np.zeros(3, dtype=np.uint16))


def test_reads_gzip_and_raw_files_by_content_not_name(tmp_path):
    gz_named_raw = tmp_path / "plain.gz"
    gz_named_raw.write_bytes(SMALL_UBYTE)
    raw_named_gz = tmp_path / "compressed.idx"
    raw_named_gz.write_bytes(gzip.compress(SMALL_UBYTE))
    for path in (gz_named_raw, raw_named_gz):
        assert read_idx(path).tolist() == [[0, 1, 2], [3, 254, 255]]


def test_expected_shape_and_dtype_pass_with_wildcard():
    array = parse_idx(SMALL_UBYTE, dtype=np.uint8, shape=(None, 3))
    assert array.shape == (2, 3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x00", "only 2 bytes"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "magic number starts 89504e47"),
        (bytes.fromhex("00000702") + bytes(8), "unknown IDX type code 0x07"),
        (bytes.fromhex("00000800"), "0 dimensions"),
        (bytes.fromhex("000008030000001c"), "truncated in the header"),
        (SMALL_UBYTE[:-1], "truncated: shape (2, 3) needs 6 data bytes, file has 5"),
        (SMALL_UBYTE + b"\x00\x00", "2 unexpected bytes after the data"),
    ],
)
def test_malformed_bytes_raise_data_error_naming_the_input(raw, message):
    with pytest.raises(DataError) as err:
        parse_idx(raw, "labels.idx")
    assert str(err.value).startswith("labels.idx: ")
    assert message in str(err.value)


def test_wrong_shape_is_reported_with_what_was_expected():
    with pytest.raises(DataError, match=r"shape is \(2, 3\), expected \(N, 28, 28\)"):
        parse_idx(SMALL_UBYTE, "x.idx", shape=(None, 28, 28))
    with pytest.raises(DataError, match="expected \\(N\\)"):
        parse_idx(SMALL_UBYTE, "x.idx", shape=(None,))


def test_wrong_value_type_is_reported():
    raw = encode_idx(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(DataError, match="values are float32, expected uint8"):
        parse_idx(raw, "x.idx", dtype=np.uint8)


def test_truncated_gzip_file_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    compressed = gzip.compress(encode_idx(np.zeros((50, 28, 28), dtype=np.uint8)))
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_gzip_of_truncated_idx_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(np.zeros(10, dtype=np.uint8))[:-3]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: truncated"):
        read_idx(path, shape=(None,))


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.gz: cannot read"):
        read_idx(tmp_path / "nope.gz")
