"""IDX files (the MNIST / Fashion-MNIST container), plain or gzip-compressed.

Layout: two zero bytes, a type code, the number of dimensions, then one big-endian
uint32 per dimension, then the values in big-endian C order. Every check happens before
numpy sees the bytes, so a wrong or truncated file gets a ``DataError`` naming the file
and the problem instead of a reshape error deep in numpy.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worker.core.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
HEADER_BYTES = 4


def parse_idx(
    raw: bytes,
    name: str = "<bytes>",
    *,
    dtype: np.dtype | type | str | None = None,
    shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array in native byte order.

    ``dtype`` and ``shape`` are optional expectations; ``None`` in ``shape`` accepts any
    size on that axis. ``name`` is used in error messages. Raises ``DataError``.
    """
    if len(raw) < HEADER_BYTES:
        raise DataError(f"{name}: not an IDX file (only {len(raw)} bytes, header needs 4)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00":
        raise DataError(
            f"{name}: not an IDX file (magic number starts {raw[:4].hex()}, expected 0000xxxx)"
        )
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    dims_end = HEADER_BYTES + 4 * ndim
    if len(raw) < dims_end:
        raise DataError(f"{name}: truncated in the header ({ndim} dimensions, {len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[HEADER_BYTES:dims_end])
    file_dtype = IDX_DTYPES[code]
    expected_bytes = int(np.prod(dims, dtype=np.int64)) * file_dtype.itemsize
    got_bytes = len(raw) - dims_end
    if got_bytes < expected_bytes:
        raise DataError(
            f"{name}: truncated: shape {dims} needs {expected_bytes} data bytes, "
            f"file has {got_bytes}"
        )
    if got_bytes > expected_bytes:
        raise DataError(
            f"{name}: {got_bytes - expected_bytes} unexpected bytes after the data of shape {dims}"
        )
    if dtype is not None and np.dtype(dtype) != file_dtype.newbyteorder("="):
        raise DataError(f"{name}: values are {file_dtype.name}, expected {np.dtype(dtype).name}")
    if shape is not None:
        _check_shape(name, dims, shape)
    array = np.frombuffer(raw, dtype=file_dtype, offset=dims_end).reshape(dims)
    return array.astype(file_dtype.newbyteorder("="), copy=True)


def read_idx(
    path: str | os.PathLike[str],
    *,
    dtype: np.dtype | type | str | None = None,
    shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (detected from the content, not the name)."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{file}: corrupt or truncated gzip data ({exc})") from exc
    return parse_idx(raw, str(file), dtype=dtype, shape=shape)


def _check_shape(name: str, dims: tuple[int, ...], shape: Sequence[int | None]) -> None:
    if len(dims) != len(shape) or any(
        s is not None and d != s for d, s in zip(dims, shape, strict=False)
    ):
        wanted = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"{name}: shape is {dims}, expected {wanted}")
