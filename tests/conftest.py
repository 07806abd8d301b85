"""Fixtures shared by the unit and integration tests (builders and fakes live in
``tests/builders.py`` and ``tests/fakes.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import make_artifact, write_artifact_dir
from tests.fakes import FakeClock
from worker.core.artifact import EcgArtifact


@pytest.fixture(scope="session")
def ecg_artifact() -> EcgArtifact:
    """A small in-memory ECG artifact."""
    return make_artifact()


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    """A small ECG artifact written to a temporary directory."""
    write_artifact_dir(tmp_path / "artifact")
    return tmp_path / "artifact"


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when a test advances it."""
    return FakeClock()
