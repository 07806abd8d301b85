"""Atomic HTTP(S) downloads into a cache directory, for the data sets' online sources."""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

DOWNLOAD_TIMEOUT_S = 60.0


def download_to(url: str, destination: Path, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``destination`` atomically: a reader never sees half a file, and
    an interrupted download leaves nothing behind. Network errors propagate as raised by
    ``urllib`` (``HTTPError``, ``URLError``, ``OSError``) for the caller to explain."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout_s) as response,
        ):
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
