"""The training report: PNG figures a person would rather look at than read, and
``report.md`` with the metrics next to the tutorial's published numbers.

Figures (the tutorial's, plus a ROC curve): ``loss.png`` (training and validation loss),
``error_histogram.png`` (test reconstruction error, normal vs anomalous, threshold line),
``reconstructions.png`` (a typical normal and a typical anomalous test window with the
reconstruction and the error shaded), ``roc.png``.

``save_loss_curves(history, path)`` is reusable by other jobs (Fashion-MNIST).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from worker.core.evaluation import METRIC_NAMES, TUTORIAL_METRICS

NORMAL_COLOUR = "tab:blue"
ANOMALY_COLOUR = "tab:red"
DPI = 110


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows; windows are normalised, rows aligned with the test labels."""

    profile: str
    model_version: str
    history: Mapping[str, Sequence[float]]
    val_label: str  # what the validation loss was computed on
    best_epoch: int | None  # the epoch whose weights were kept (None: the last one)
    threshold: float
    test_errors: np.ndarray
    test_labels: np.ndarray
    test_windows: np.ndarray
    test_reconstructions: np.ndarray
    test_metrics: Mapping[str, Any]
    validation_metrics: Mapping[str, Any] | None


def write_report(report_dir: Path, inputs: ReportInputs) -> list[Path]:
    """Write the figures and ``report.md`` into ``report_dir``; returns the files written."""
    report_dir.mkdir(parents=True, exist_ok=True)
    files = [
        save_loss_curves(
            inputs.history,
            report_dir / "loss.png",
            val_label=inputs.val_label,
            best_epoch=inputs.best_epoch,
        ),
        _error_histogram(inputs, report_dir / "error_histogram.png"),
        _reconstructions(inputs, report_dir / "reconstructions.png"),
        _roc(inputs, report_dir / "roc.png"),
    ]
    md = report_dir / "report.md"
    md.write_text(_markdown(inputs, [f.name for f in files]), encoding="utf-8")
    return [*files, md]


def save_loss_curves(
    history: Mapping[str, Sequence[float]],
    path: Path,
    title: str = "Training loss",
    val_label: str = "validation loss",
    best_epoch: int | None = None,
) -> Path:
    """Plot ``loss`` and ``val_loss`` (Keras ``History.history``) per epoch, ``val_auc`` on a
    second axis when present, and a marker at ``best_epoch`` (the weights that were kept)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    handles = ax.plot(epochs, history.get("loss", []), label="training loss")
    if history.get("val_loss"):
        handles += ax.plot(epochs, history["val_loss"], label=val_label)
    if history.get("val_auc"):
        auc_ax = ax.twinx()
        handles += auc_ax.plot(
            epochs, history["val_auc"], color="tab:green", lw=1, label="validation ROC AUC"
        )
        auc_ax.set_ylabel("validation ROC AUC")
    if best_epoch is not None:
        handles.append(
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"kept (epoch {best_epoch})")
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="loss (mean absolute error)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="center right")
    return _save(fig, path)


def _error_histogram(inputs: ReportInputs, path: Path) -> Path:
    errors = np.asarray(inputs.test_errors, np.float64)
    normal = errors[inputs.test_labels == 1]
    anomalous = errors[inputs.test_labels == 0]
    # A few extreme errors would squash the interesting part; they go into the last bin.
    upper = max(float(np.percentile(errors, 99.5)), inputs.threshold * 1.1)
    bins = np.linspace(errors.min(), upper, 60).tolist()
    normal, anomalous = np.minimum(normal, upper), np.minimum(anomalous, upper)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(normal, bins=bins, alpha=0.6, color=NORMAL_COLOUR, label=f"normal ({normal.size})")
    ax.hist(
        anomalous, bins=bins, alpha=0.6, color=ANOMALY_COLOUR, label=f"anomalous ({anomalous.size})"
    )
    ax.axvline(inputs.threshold, color="black", ls="--", label=f"threshold {inputs.threshold:.4f}")
    ax.set(
        xlabel="reconstruction error (mean absolute error per window; last bin: and above)",
        ylabel="test windows",
        title="Reconstruction error on the test split",
    )
    ax.legend()
    return _save(fig, path)


def _reconstructions(inputs: ReportInputs, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, label, name, colour in (
        (axes[0], 1, "normal", NORMAL_COLOUR),
        (axes[1], 0, "anomalous", ANOMALY_COLOUR),
    ):
        rows = np.flatnonzero(inputs.test_labels == label)
        if rows.size == 0:
            ax.set_title(f"no {name} test windows")
            continue
        # A typical window of the class: the one with the median reconstruction error.
        errs = inputs.test_errors[rows]
        row = int(rows[np.argsort(errs)[len(errs) // 2]])
        x, rec = inputs.test_windows[row], inputs.test_reconstructions[row]
        t = np.arange(x.shape[0])
        ax.plot(t, x, color=colour, label="input")
        ax.plot(t, rec, color="black", lw=1, label="reconstruction")
        ax.fill_between(t, x, rec, color="lightcoral", alpha=0.6, label="error")
        verdict = "flagged" if inputs.test_errors[row] >= inputs.threshold else "not flagged"
        ax.set(
            title=f"Typical {name} test window: error {inputs.test_errors[row]:.4f} ({verdict})",
            xlabel="sample",
        )
        ax.legend(loc="lower right")
    axes[0].set_ylabel("normalised amplitude")
    return _save(fig, path)


def _roc(inputs: ReportInputs, path: Path) -> Path:
    from sklearn.metrics import roc_curve

    is_anomaly = inputs.test_labels == 0
    fig, ax = plt.subplots(figsize=(5, 5))
    if 0 < is_anomaly.sum() < is_anomaly.size:
        fpr, tpr, _ = roc_curve(is_anomaly, inputs.test_errors)
        auc = inputs.test_metrics.get("roc_auc")
        ax.plot(fpr, tpr, label=f"autoencoder (AUC {auc:.4f})")
        flagged = inputs.test_errors >= inputs.threshold
        op_fpr = flagged[~is_anomaly].mean()
        op_tpr = flagged[is_anomaly].mean()
        ax.plot([op_fpr], [op_tpr], "ko", label="chosen threshold")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="chance")
    ax.set(
        xlabel="false positive rate (normal flagged)",
        ylabel="true positive rate (anomaly flagged)",
        title="ROC on the test split",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def _markdown(inputs: ReportInputs, figures: list[str]) -> str:
    cols = [("tutorial (published)", TUTORIAL_METRICS), ("test", inputs.test_metrics)]
    if inputs.validation_metrics is not None:
        cols.append(("validation", inputs.validation_metrics))
    lines = [
        f"# ECG autoencoder {inputs.model_version} ({inputs.profile} profile)",
        "",
        "Accuracy, precision and recall use the tutorial's convention (positive class = normal);",
        "`anomaly_*` treat the anomaly as positive; `roc_auc` ranks windows by reconstruction",
        "error.",
        f"A window is anomalous when its error is >= the threshold {inputs.threshold:.6f}.",
        "",
        "| metric | " + " | ".join(name for name, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for metric in METRIC_NAMES:
        cells = []
        for _, values in cols:
            v = values.get(metric)
            cells.append("-" if v is None else f"{v:.4f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    m = inputs.test_metrics
    if "tp" in m:
        lines += [
            "",
            f"Test split: {m['windows']} windows ({m['normal']} normal, "
            f"{m['anomalous']} anomalous); "
            f"anomalies caught {m['tp']}, missed {m['fn']}; normal windows flagged {m['fp']}.",
        ]
    lines += ["", *(f"![{name}]({name})" for name in figures), ""]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
