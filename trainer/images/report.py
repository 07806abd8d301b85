"""Reports for the image models: rows of images (original / reconstructed ...), loss curves,
and a short ``report.md`` beside them.

Figures have a fixed size in pixels (no tight bounding box), so a reader and the tests know
what to expect: ``rows_figure_pixels(n_rows)`` and ``LOSS_FIGURE_PIXELS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 100
ROW_WIDTH_IN = 20.0  # the tutorial's figsize=(20, 4) for two rows of 10 images
ROW_HEIGHT_IN = 2.0
LOSS_FIGSIZE_IN = (8.0, 5.0)
LOSS_FIGURE_PIXELS = (int(LOSS_FIGSIZE_IN[0] * DPI), int(LOSS_FIGSIZE_IN[1] * DPI))
IMAGES_PER_ROW = 10


def rows_figure_pixels(n_rows: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure made by ``save_image_rows`` with n_rows rows."""
    return int(ROW_WIDTH_IN * DPI), int(ROW_HEIGHT_IN * n_rows * DPI)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_image_rows(path: Path, rows: Sequence[tuple[str, np.ndarray]]) -> Path:
    """Save grey images as rows, one labelled row per (label, images[n, 28, 28(, 1)]).

    As the tutorial: each image titled with its row's label, axes hidden.
    """
    if not rows:
        raise ValueError("save_image_rows needs at least one row")
    n_cols = max(len(images) for _, images in rows)
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(rows),
        n_cols,
        figsize=(ROW_WIDTH_IN, ROW_HEIGHT_IN * len(rows)),
        dpi=DPI,
        squeeze=False,
    )
    try:
        for r, (label, images) in enumerate(rows):
            for c in range(n_cols):
                ax = axes[r][c]
                ax.set_axis_off()
                if c < len(images):
                    ax.imshow(np.squeeze(images[c]), cmap="gray", vmin=0.0, vmax=1.0)
                    ax.set_title(label, fontsize=10)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.9, wspace=0.1, hspace=0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def save_loss_curves(path: Path, history: Mapping[str, Sequence[float]], title: str) -> Path:
    """Training and validation MSE per epoch (markers, so a 1-epoch run shows its point)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=LOSS_FIGSIZE_IN, dpi=DPI)
    try:
        for key, label in (("loss", "training"), ("val_loss", "validation (test set)")):
            values = history.get(key, [])
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()  # adjusts the layout inside the fixed canvas, not the canvas size
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def write_report_md(
    path: Path,
    title: str,
    facts: Mapping[str, Any],
    images: Mapping[str, str],
) -> Path:
    """A short Markdown report: a table of facts, then each image with its caption."""
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    for caption, file_name in images.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({file_name})"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
