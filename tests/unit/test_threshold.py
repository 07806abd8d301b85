"""Threshold rules: parsing, and what each rule picks on hand-made errors."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.ecg.threshold import ThresholdRule, choose, max_f1, mean_std, parse_rule, percentile
from worker.core.errors import ConfigError, DataError


def test_parse_rules() -> None:
    assert parse_rule("mean_std") == ThresholdRule("mean_std")
    assert parse_rule("max_f1").needs_validation
    rule = parse_rule("percentile:97.5")
    assert rule.percentile == 97.5
    assert str(rule) == "percentile:97.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "median",
            r"unknown threshold rule 'median' \(expected one of mean_std, percentile:P, max_f1\)",
        ),
        ("percentile:abc", r"percentile 'abc' is not a number"),
        ("percentile:100", r"percentile must be in \(0, 100\)"),
        ("percentile:0", r"percentile must be in \(0, 100\)"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rule(text)


def test_mean_std_is_mean_plus_one_std() -> None:
    errors = np.array([0.01, 0.02, 0.03, 0.04], np.float32)
    expected = float(np.mean(errors.astype(np.float64)) + np.std(errors.astype(np.float64)))
    assert mean_std(errors) == pytest.approx(expected, rel=1e-6)
    # stored exactly as the float32 the scorer compares with
    assert mean_std(errors) == float(np.float32(mean_std(errors)))


def test_percentile() -> None:
    errors = np.arange(1, 101, dtype=np.float32) / 1000
    assert percentile(errors, 90) == pytest.approx(0.0901, rel=1e-5)


def test_max_f1_separates_perfectly_separable_classes() -> None:
    errors = np.array([0.01, 0.02, 0.03, 0.10, 0.12, 0.15], np.float32)
    labels = np.array([1, 1, 1, 0, 0, 0])  # 0 = anomaly
    t = max_f1(errors, labels)
    # halfway between the highest normal error and the lowest anomalous one
    assert 0.03 < t <= 0.10
    assert t == pytest.approx(0.065, rel=1e-6)
    flagged = errors >= t
    assert flagged.tolist() == [False, False, False, True, True, True]


def test_max_f1_with_overlap_maximises_anomaly_f1() -> None:
    rng = np.random.default_rng(1)
    normal = rng.normal(0.03, 0.01, 300).astype(np.float32)
    anomalous = rng.normal(0.07, 0.02, 200).astype(np.float32)
    errors = np.concatenate([normal, anomalous])
    labels = np.array([1] * 300 + [0] * 200)
    t = max_f1(errors, labels)

    def f1(threshold: float) -> float:
        flagged = errors >= np.float32(threshold)
        tp = np.sum(flagged & (labels == 0))
        return 2 * tp / (flagged.sum() + (labels == 0).sum())

    best = max(f1(c) for c in errors)
    assert f1(t) == pytest.approx(best, abs=1e-12)


def test_max_f1_needs_both_classes() -> None:
    with pytest.raises(DataError, match="both normal and anomalous"):
        max_f1(np.array([0.1, 0.2], np.float32), np.array([1, 1]))


def test_choose_dispatches_and_max_f1_needs_validation() -> None:
    train = np.array([0.01, 0.02, 0.03], np.float32)
    assert choose(parse_rule("mean_std"), train) == mean_std(train)
    assert choose(parse_rule("percentile:50"), train) == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="needs a validation split"):
        choose(parse_rule("max_f1"), train)


@pytest.mark.parametrize("bad", [np.array([], np.float32), np.array([0.1, np.nan], np.float32)])
def test_rejects_empty_or_non_finite_errors(bad: np.ndarray) -> None:
    with pytest.raises(DataError):
        mean_std(bad)
