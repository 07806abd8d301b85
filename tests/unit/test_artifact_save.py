"""save_ecg_artifact is the one writer of ECG artifacts: load(save(a)) == a."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from tests.builders import make_artifact
from worker.core.artifact import ARTIFACT_FILE, MODEL_FILE, load_ecg_artifact, save_ecg_artifact
from worker.core.scorer import Scorer


def test_load_of_save_is_the_same_artifact(tmp_path: Path) -> None:
    unsaved = make_artifact(seed=3)
    loaded = load_ecg_artifact(save_ecg_artifact(unsaved, tmp_path / "ecg").path)
    assert loaded.path == tmp_path / "ecg"
    assert len(loaded.model_version) == 16 and loaded.model_version != unsaved.model_version
    # Every field the artifact defines survives; only path, version and provenance are new.
    assert loaded == dataclasses.replace(
        unsaved, path=loaded.path, model_version=loaded.model_version, metadata=loaded.metadata
    )
    assert loaded.metadata["data"] == unsaved.metadata["data"]
    assert not (tmp_path / "ecg" / MODEL_FILE).exists()  # no Keras model was given


def test_a_saved_artifact_scores_like_the_unsaved_one(tmp_path: Path) -> None:
    unsaved = make_artifact(seed=4)
    windows = np.random.default_rng(0).normal(0, 1, (20, unsaved.window_length))
    before = Scorer(unsaved).score(windows)
    after = Scorer(save_ecg_artifact(unsaved, tmp_path / "a")).score(windows)
    np.testing.assert_array_equal(before.errors, after.errors)  # same batch, same weights


def test_the_version_is_a_content_hash(tmp_path: Path) -> None:
    art = make_artifact(seed=5)
    a = save_ecg_artifact(art, tmp_path / "a")
    b = save_ecg_artifact(art, tmp_path / "b")
    c = save_ecg_artifact(dataclasses.replace(art, threshold=art.threshold * 2), tmp_path / "c")
    assert a.model_version == b.model_version != c.model_version
    meta = json.loads((tmp_path / "a" / ARTIFACT_FILE).read_text())
    assert meta["model_version"] == a.model_version
    assert meta["model"]["activations"] == ["relu", "sigmoid"]


def test_dense_layers_compare_by_weights() -> None:
    a, b = make_artifact(seed=1), make_artifact(seed=2)
    assert a.layers == make_artifact(seed=1).layers
    assert a.layers != b.layers
