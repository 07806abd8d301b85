"""The numpy Scorer (the worker's only scoring path) equals the Keras model it was written
from, and finds the abnormal segments of a window."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from tests.builders import make_artifact, synthetic_windows
from tests.oracles import abnormal_segments
from worker.core.agreement import compare_scores
from worker.core.artifact import ECG_KIND, error_quantiles, load_ecg_artifact, write_artifact
from worker.core.errors import DataError
from worker.core.scorer import Scorer

LO, HI = -7.0, 5.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Scorer, np.ndarray]:
    """A briefly trained tutorial model (so weights are not trivial) and its Scorer."""
    from trainer.ecg.model import build_autoencoder, seed_everything

    seed_everything(0)
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 140)
    raw = np.sin(t)[None, :] * rng.uniform(1, 4, (64, 1)) + rng.normal(0, 0.3, (64, 140))
    x = ((raw - LO) / (HI - LO)).astype(np.float32)
    model = build_autoencoder(140)
    model.fit(x, x, epochs=3, batch_size=16, verbose=0)
    meta = {
        "kind": ECG_KIND,
        "window_length": 140,
        "normalisation": {"min": LO, "max": HI},
        "threshold": 0.05,
        "threshold_rule": "mean_std",
        "profile": "tutorial",
        "training_error_quantiles": error_quantiles([0.01, 0.02]),
    }
    out = tmp_path_factory.mktemp("art") / "ecg"
    write_artifact(out, model, meta, dense_weights=True)
    return model, Scorer(load_ecg_artifact(out)), raw


def test_reconstruction_equals_keras(trained) -> None:
    model, scorer, raw = trained
    x = ((raw - LO) / (HI - LO)).astype(np.float32)
    keras_out = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        scorer.reconstruct(scorer.artifact.normalisation.apply(raw)), keras_out, atol=1e-6
    )


def test_errors_equal_keras_mae_and_threshold_decides(trained) -> None:
    model, scorer, raw = trained
    x = ((raw - LO) / (HI - LO)).astype(np.float32)
    keras_mae = np.mean(np.abs(model.predict(x, verbose=0) - x), axis=1)
    scores = scorer.score(raw)
    np.testing.assert_allclose(scores.errors, keras_mae, atol=1e-6)
    np.testing.assert_array_equal(scores.anomalies, scores.errors >= np.float32(0.05))
    assert scores.sample_errors.shape == (64, 140)


def test_saved_keras_model_loads_and_agrees(trained) -> None:
    import keras

    _, scorer, raw = trained
    loaded = keras.models.load_model(scorer.artifact.path / "model.keras")
    x = scorer.artifact.normalisation.apply(raw)
    np.testing.assert_allclose(scorer.reconstruct(x), loaded.predict(x, verbose=0), atol=1e-6)


def test_one_row_scores_like_in_a_batch(trained) -> None:
    _, scorer, raw = trained
    batch = scorer.score(raw)
    singles = [scorer.score(raw[i : i + 1]) for i in range(len(raw))]
    agreement = compare_scores(
        batch.errors,
        batch.anomalies,
        np.array([s.errors[0] for s in singles]),
        np.array([s.anomalies[0] for s in singles]),
        threshold=scorer.threshold,
        window_length=scorer.window_length,
    )
    assert agreement.ok and agreement.compared == len(raw)


@pytest.mark.parametrize("shape", [(3, 139), (140,), (2, 2, 140)])
def test_wrong_shape_is_a_data_error(trained, shape) -> None:
    _, scorer, _ = trained
    with pytest.raises(DataError, match=r"expected windows of shape \(n, 140\)"):
        scorer.score(np.zeros(shape))


def test_unscorable_rows_are_marked_and_the_others_scored_as_alone(trained) -> None:
    _, scorer, raw = trained
    bad = raw[:4].copy()
    bad[1, 5] = np.inf
    bad[2, 0] = 1e300  # finite, but beyond float32 once normalised
    scores = scorer.score(bad)
    assert scores.scorable.tolist() == [True, False, False, True]
    assert not scores.all_scored
    alone = scorer.score(raw[[0, 3]])
    assert alone.all_scored
    np.testing.assert_allclose(scores.errors, alone.errors, atol=1e-6)
    np.testing.assert_array_equal(scores.anomalies, alone.anomalies)
    assert scores.sample_errors.shape == (2, 140)


def test_segments_find_the_bump() -> None:
    err = np.full(140, 0.01)
    err[60:75] = 0.3
    err[100:104] = 0.1
    segments = abnormal_segments(err)
    assert segments[0].start <= 60 and segments[0].end >= 75
    assert segments[0].end - segments[0].start <= 25
    assert segments[0].mean_error > 0.15
    assert len(segments) <= 3
    assert [s.mean_error for s in segments] == sorted(
        (s.mean_error for s in segments), reverse=True
    )


def test_segments_of_a_flat_error_give_one_stretch() -> None:
    segments = abnormal_segments(np.full(140, 0.02), smooth_samples=5)
    assert len(segments) == 1
    assert segments[0].end - segments[0].start == 5


def test_an_error_equal_to_the_threshold_is_an_anomaly() -> None:
    # The tutorial's rule: normal only when the error is *less than* the threshold.
    artifact = make_artifact()
    windows = synthetic_windows(3, seed=1)
    errors = Scorer(artifact).score(windows).errors
    at = replace(artifact, threshold=float(errors[1]))
    scores = Scorer(at).score(windows)
    assert scores.anomalies.tolist() == (errors >= errors[1]).tolist()
    assert scores.anomalies[1]


def test_unscorable_rows_raise_no_numpy_warning() -> None:
    # One bad record must not put a RuntimeWarning into the worker's log per batch.
    windows = synthetic_windows(3, seed=2)
    windows[0, 3] = 1e300  # overflows float32
    windows[1, 0] = np.nan
    windows[2, 7] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = Scorer(make_artifact()).score(windows)
    assert scores.scorable.tolist() == [False, False, False]
    assert scores.errors.shape == (0,)
