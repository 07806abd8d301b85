"""The artifact contract: a Keras model written by the trainer's path loads back, validated,
exactly; every way an artifact can be broken gives a clear ArtifactError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.core.artifact import (
    ARTIFACT_FILE,
    ECG_KIND,
    WEIGHTS_FILE,
    error_quantiles,
    load_ecg_artifact,
    read_metadata,
    write_artifact,
)
from worker.core.errors import ArtifactError


@pytest.fixture(scope="module")
def model() -> Any:
    from trainer.ecg.model import build_autoencoder, seed_everything

    seed_everything(0)
    return build_autoencoder(140)


def _metadata() -> dict[str, Any]:
    return {
        "kind": ECG_KIND,
        "window_length": 140,
        "normalisation": {"min": -7.0, "max": 5.0},
        "threshold": 0.03,
        "threshold_rule": "mean_std",
        "profile": "tutorial",
        "training_error_quantiles": error_quantiles(np.linspace(0.01, 0.05, 50)),
        "metrics": {"test": {"accuracy": 0.95}},
    }


@pytest.fixture
def artifact_dir(tmp_path: Path, model: Any) -> Path:
    out = tmp_path / "ecg"
    write_artifact(out, model, _metadata(), dense_weights=True)
    return out


def test_round_trip(artifact_dir: Path, model: Any) -> None:
    art = load_ecg_artifact(artifact_dir, window_length=140)
    assert art.window_length == 140
    assert art.threshold == 0.03
    assert art.threshold_rule == "mean_std"
    assert art.profile == "tutorial"
    assert (art.normalisation.min, art.normalisation.max) == (-7.0, 5.0)
    assert len(art.training_error_quantiles) == 101
    assert len(art.model_version) == 16
    assert [layer.activation for layer in art.layers] == ["relu"] * 5 + ["sigmoid"]
    weights = model.get_weights()
    for i, layer in enumerate(art.layers):
        np.testing.assert_array_equal(layer.kernel, weights[2 * i])
        np.testing.assert_array_equal(layer.bias, weights[2 * i + 1])
    assert art.metadata["metrics"]["test"]["accuracy"] == 0.95
    assert (artifact_dir / "model.keras").is_file()


def test_model_version_is_a_content_hash(tmp_path: Path, model: Any) -> None:
    a = write_artifact(tmp_path / "a", model, _metadata(), dense_weights=True)
    b = write_artifact(tmp_path / "b", model, _metadata(), dense_weights=True)
    changed = {**_metadata(), "threshold": 0.031}
    c = write_artifact(tmp_path / "c", model, changed, dense_weights=True)
    assert a["model_version"] == b["model_version"] != c["model_version"]


def test_run_provenance_does_not_change_model_version(tmp_path: Path, model: Any) -> None:
    a = write_artifact(tmp_path / "a", model, {**_metadata(), "run": {"wall_time_s": 1.0}})
    b = write_artifact(tmp_path / "b", model, {**_metadata(), "run": {"wall_time_s": 9.5}})
    assert a["model_version"] == b["model_version"]
    assert read_metadata(tmp_path / "b")["run"] == {"wall_time_s": 9.5}


def test_artifact_directory_is_readable_by_other_users(artifact_dir: Path) -> None:
    # Written by a trainer, read by a worker that often runs as another user.
    assert artifact_dir.stat().st_mode & 0o005 == 0o005


def test_rewrite_replaces_existing_artifact(artifact_dir: Path, model: Any) -> None:
    write_artifact(artifact_dir, model, {**_metadata(), "threshold": 0.5}, dense_weights=True)
    assert load_ecg_artifact(artifact_dir).threshold == 0.5
    assert not list(artifact_dir.parent.glob(".ecg.*"))  # no staging leftovers


def _edit(artifact_dir: Path, change) -> None:
    path = artifact_dir / ARTIFACT_FILE
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"nowhere: artifact directory does not exist"):
        load_ecg_artifact(tmp_path / "nowhere")


def test_missing_metadata_file(artifact_dir: Path) -> None:
    (artifact_dir / ARTIFACT_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"artifact\.json: missing"):
        load_ecg_artifact(artifact_dir)


def test_missing_weights_file(artifact_dir: Path) -> None:
    (artifact_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"weights\.npz: missing"):
        load_ecg_artifact(artifact_dir)


@pytest.mark.parametrize("name", ["threshold", "window_length", "normalisation", "model_version"])
def test_missing_field(artifact_dir: Path, name: str) -> None:
    _edit(artifact_dir, lambda m: m.pop(name))
    with pytest.raises(ArtifactError, match=rf"artifact\.json: missing field '{name}'"):
        load_ecg_artifact(artifact_dir)


def test_missing_nested_field(artifact_dir: Path) -> None:
    _edit(artifact_dir, lambda m: m["normalisation"].pop("max"))
    with pytest.raises(ArtifactError, match=r"missing field 'normalisation\.max'"):
        load_ecg_artifact(artifact_dir)


def test_unknown_schema_version(artifact_dir: Path) -> None:
    _edit(artifact_dir, lambda m: m.update(schema_version=99))
    with pytest.raises(ArtifactError, match=r"unknown schema_version 99 \(this build reads 1\)"):
        load_ecg_artifact(artifact_dir)


def test_expected_window_length_mismatch(artifact_dir: Path) -> None:
    with pytest.raises(ArtifactError, match=r"window_length is 140, but 187 was expected"):
        load_ecg_artifact(artifact_dir, window_length=187)


def test_window_length_disagrees_with_model(artifact_dir: Path) -> None:
    _edit(artifact_dir, lambda m: m.update(window_length=150))
    with pytest.raises(
        ArtifactError, match=r"model maps 140 -> 140 samples, artifact says window_length 150"
    ):
        load_ecg_artifact(artifact_dir)


def test_non_finite_threshold(artifact_dir: Path) -> None:
    path = artifact_dir / ARTIFACT_FILE
    path.write_text(path.read_text().replace('"threshold": 0.03', '"threshold": NaN'))
    with pytest.raises(ArtifactError, match=r"field 'threshold' must be a finite number"):
        load_ecg_artifact(artifact_dir)


def test_corrupt_json(artifact_dir: Path) -> None:
    (artifact_dir / ARTIFACT_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match=r"artifact\.json: not readable JSON"):
        load_ecg_artifact(artifact_dir)
