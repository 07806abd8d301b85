"""The pure parts of the image jobs: options, the denoiser's noise, the report files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trainer.cli import build_parser, main
from trainer.images import denoiser_job
from trainer.images import report as images_report
from worker.core.errors import DataError


def test_defaults_are_the_tutorials():
    parser = build_parser()
    ae = parser.parse_args(["fashion-ae"])
    assert (ae.epochs, ae.latent_dim, ae.seed, ae.out) == (10, 64, 0, "artifacts/fashion-ae")
    assert (ae.data, ae.train_limit, ae.test_limit) == (None, None, None)
    dn = parser.parse_args(["denoiser"])
    assert (dn.epochs, dn.noise_factor, dn.out) == (10, 0.2, "artifacts/denoiser")


@pytest.mark.parametrize(
    "argv",
    [
        ["fashion-ae", "--epochs", "0"],
        ["fashion-ae", "--latent-dim", "-3"],
        ["fashion-ae", "--train-limit", "ten"],
        ["denoiser", "--noise-factor", "-0.1"],
        ["denoiser", "--noise-factor", "nan"],
    ],
)
def test_bad_options_are_rejected_with_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_does_not_import_tensorflow():
    # A fresh interpreter: another test in this session may have imported TensorFlow.
    code = (
        "import argparse, sys\n"
        "from trainer.images import denoiser_job, fashion_ae_job\n"
        "for m in (fashion_ae_job, denoiser_job): m.add_arguments(argparse.ArgumentParser())\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_data_is_one_clear_line_and_exit_code_2(monkeypatch, capsys):
    def nothing(*args, **kwargs):
        raise DataError("Fashion-MNIST not found; tried: ...")

    monkeypatch.setattr("trainer.images.training.load_fashion_mnist", nothing)
    assert main(["denoiser", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ecg-train: error: Fashion-MNIST not found; tried: ..."]


def test_noise_is_clipped_seeded_and_scaled_by_the_factor():
    images = np.full((200, 28, 28, 1), 0.5, dtype=np.float32)
    noisy = denoiser_job.add_noise(images, 0.2, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == images.shape
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert np.std(noisy - images) == pytest.approx(0.2, rel=0.02)  # 0.5 +- 0.2: rarely clipped
    again = denoiser_job.add_noise(images, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(noisy, again)
    edges = denoiser_job.add_noise(
        np.ones((50, 28, 28, 1), np.float32), 0.2, np.random.default_rng(1)
    )
    assert edges.max() == 1.0 and (edges < 1.0).any()
    unchanged = denoiser_job.add_noise(images, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(unchanged, images)


def test_image_rows_png_has_the_documented_size(tmp_path):
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    rows = [("original", rng.random((10, 28, 28))), ("noisy", rng.random((10, 28, 28, 1)))]
    path = images_report.save_image_rows(tmp_path / "r" / "rows.png", rows)
    width, height = images_report.rows_figure_pixels(2)
    assert imread(path).shape[:2] == (height, width) == (400, 2000)
    three = images_report.save_image_rows(tmp_path / "three.png", [*rows, rows[0]])
    assert imread(three).shape[:2] == (600, 2000)


def test_loss_curves_png_has_the_documented_size(tmp_path):
    from matplotlib.image import imread

    path = images_report.save_loss_curves(
        tmp_path / "loss.png", {"loss": [0.03, 0.02], "val_loss": [0.025, 0.018]}, "t"
    )
    width, height = images_report.LOSS_FIGURE_PIXELS
    assert imread(path).shape[:2] == (height, width)


def test_report_md_lists_facts_and_links_images(tmp_path):
    path = images_report.write_report_md(
        tmp_path / "report.md", "Title", {"val MSE": "0.00890"}, {"Loss curves": "loss.png"}
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Title\n")
    assert "| val MSE | 0.00890 |" in text
    assert "![Loss curves](loss.png)" in text
