"""Detection metrics: the tutorial's convention (positive = normal) and the anomaly view."""

from __future__ import annotations

import numpy as np
import pytest

from worker.core.errors import DataError
from worker.core.evaluation import detection_metrics, metrics_table


def test_hand_computed_counts() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])  # 1 = normal
    errors = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6, 0.25, 0.95, 0.15])
    flags = errors >= 0.5
    m = detection_metrics(labels, errors, flags)
    # flagged: rows 3 (normal), 4, 5, 6, 8 (anomalous); missed anomaly: row 7
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 1, 4, 1)
    assert m["accuracy"] == pytest.approx(0.8)
    # positive = normal: rows predicted normal 0,1,2,7,9, 4 of them normal; 4 of 5 normal found
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["anomaly_precision"] == pytest.approx(4 / 5)
    assert m["anomaly_recall"] == pytest.approx(4 / 5)
    assert m["anomaly_f1"] == pytest.approx(0.8)
    # AUC: (anomaly, normal) pairs where the anomaly has the larger error: 4+4+4+3+5 of 25
    assert m["roc_auc"] == pytest.approx(20 / 25)
    assert (m["windows"], m["normal"], m["anomalous"]) == (10, 5, 5)


def test_single_class_has_no_auc() -> None:
    m = detection_metrics(np.ones(4), np.array([0.1, 0.2, 0.3, 0.4]), np.zeros(4, bool))
    assert m["roc_auc"] is None
    assert m["accuracy"] == 1.0


def test_mismatched_lengths() -> None:
    with pytest.raises(DataError, match="differ in length"):
        detection_metrics(np.ones(3), np.zeros(2), np.zeros(3, bool))


def test_labels_must_be_binary() -> None:
    with pytest.raises(DataError, match=r"0 \(anomalous\) or 1 \(normal\)"):
        detection_metrics(np.array([0, 2]), np.zeros(2), np.zeros(2, bool))


def test_table_lists_every_metric_per_column() -> None:
    text = metrics_table({"a": {"accuracy": 0.5, "roc_auc": None}, "b": {"accuracy": 0.25}})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "a", "b"]
    assert lines[1].split() == ["accuracy", "0.5000", "0.2500"]
    assert lines[-1].split() == ["roc_auc", "-", "-"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed: int) -> None:
    """The numpy definitions equal scikit-learn's, including tied errors."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    # float32 errors rounded to 3 decimals: many ties, as in real scores near the threshold
    errors = np.round(rng.normal(0.03, 0.01, 500) + (labels == 0) * 0.02, 3).astype(np.float32)
    flags = errors >= np.float32(0.04)
    m = detection_metrics(labels, errors, flags)
    normal_pred = (~flags).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, normal_pred), abs=1e-15)
    assert m["precision"] == pytest.approx(precision_score(labels, normal_pred), abs=1e-15)
    assert m["recall"] == pytest.approx(recall_score(labels, normal_pred), abs=1e-15)
    anomaly = (labels == 0).astype(int)
    assert m["anomaly_precision"] == pytest.approx(precision_score(anomaly, flags), abs=1e-15)
    assert m["anomaly_recall"] == pytest.approx(recall_score(anomaly, flags), abs=1e-15)
    assert m["anomaly_f1"] == pytest.approx(f1_score(anomaly, flags), abs=1e-15)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(anomaly, errors), abs=1e-12)
