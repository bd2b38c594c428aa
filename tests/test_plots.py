"""Tests for advlib.plots: figure builders and reproducible saving."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from advlib import plots


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_HOME", str(tmp_path))
    return tmp_path


def small_curve() -> Figure:
    df = pd.DataFrame(
        {"eps": [0.0, 0.1, 0.3] * 2, "acc": [0.99, 0.8, 0.1, 0.98, 0.9, 0.6], "model": ["A"] * 3 + ["B"] * 3}
    )
    return plots.curves(df, "eps", "acc", hue="model", title="Accuracy vs eps")


def test_save_figure_png_pdf_byte_identical(home):
    fig = small_curve()
    first = plots.save_figure(fig, "demo", "ci", "figure1", close=False)
    out = home / "runs" / "demo" / "ci"  # no Run made and not published
    assert first == {"png": out / "figure1.png", "pdf": out / "figure1.pdf"}
    png, pdf = first["png"].read_bytes(), first["pdf"].read_bytes()
    assert png.startswith(b"\x89PNG") and pdf.startswith(b"%PDF")
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf and b"Software" not in png
    second = plots.save_figure(fig, "demo", "ci", "figure1")
    assert second["png"].read_bytes() == png and second["pdf"].read_bytes() == pdf
    assert not list(out.glob("*.tmp"))


def test_save_figure_same_plot_rebuilt_is_identical(home):
    a = plots.save_figure(small_curve(), "demo", "ci", "a")
    b = plots.save_figure(small_curve(), "demo", "ci", "b")
    assert a["png"].read_bytes() == b["png"].read_bytes()
    assert a["pdf"].read_bytes() == b["pdf"].read_bytes()


def test_save_figure_rejects_bad_name(home):
    fig = small_curve()
    with pytest.raises(ValueError, match="invalid output name"):
        plots.save_figure(fig, "demo", "ci", "../escape")


def test_heatmap_annotates_every_cell():
    data = pd.DataFrame(
        np.arange(12, dtype=float).reshape(4, 3) * 7.5,
        index=[f"class {i}" for i in range(4)],
        columns=["FGSM", "PGD", "CW"],
    )
    fig = plots.heatmap(data, title="Accuracy", vmin=0, vmax=100)
    ax = fig.axes[0]
    numbers = [t.get_text() for t in ax.texts]
    assert len(numbers) == data.size
    assert sorted(numbers, key=float) == [f"{v:.0f}" for v in sorted(data.to_numpy().ravel())]
    assert ax.get_title() == "Accuracy"


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_channels(channels):
    images = torch.rand(5, channels, 8, 8)
    fig = plots.image_grid(
        images, nrow=3, titles=[str(i) for i in range(5)], row_labels=["clean", "adv"], col_labels=["a", "b", "c"]
    )
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(shown) == 5
    expected = (8, 8) if channels == 1 else (8, 8, 3)
    assert all(isinstance(im, AxesImage) and im.get_array().shape == expected for im in shown)
    if channels == 1:
        assert shown[0].get_cmap().name == "gray"
    assert fig.axes[0].get_title() == "a\n0" and fig.axes[3].get_ylabel() == "adv"


def test_image_grid_numpy_input():
    fig = plots.image_grid(np.ones((2, 3, 4, 4)), nrow=2)
    assert len(fig.axes) == 2


@pytest.mark.parametrize("shape", [(8, 8), (2, 8, 8), (1, 2, 1, 8, 8), (2, 2, 8, 8)])
def test_image_grid_rejects_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        plots.image_grid(np.zeros(shape), nrow=2)


def test_image_grid_rejects_label_count():
    with pytest.raises(ValueError, match="row_labels"):
        plots.image_grid(np.zeros((4, 1, 4, 4)), nrow=2, row_labels=["only one"])


def test_curves_and_bars():
    fig = small_curve()
    ax = fig.axes[0]
    assert len(ax.get_lines()) >= 2 and ax.get_xlabel() == "eps"
    df = pd.DataFrame(
        {"attack": ["FGSM", "PGD", "FGSM", "PGD"], "acc": [0.9, 0.5, 0.8, 0.4], "model": ["A", "A", "B", "B"]}
    )
    bar_fig = plots.bars(df, "attack", "acc", hue="model", title="Robust accuracy")
    assert len(bar_fig.axes[0].patches) >= 4
    with pytest.raises(KeyError, match="nope"):
        plots.curves(df, "nope", "acc")


def test_heatmap_rows_and_adversarial_grid():
    import numpy as np
    import pandas as pd

    from advlib.plots import adversarial_grid, heatmap_rows

    frame = pd.DataFrame(np.arange(6.0).reshape(3, 2))
    fig = heatmap_rows({"G1": (frame, frame), "G2": (frame, frame)}, ["accuracy", "wins"])
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert len(heatmaps) == 4 and len(fig.axes) == 8  # every heatmap has its colour bar
    assert sum(len(ax.texts) for ax in heatmaps) == 4 * 6  # every cell annotated
    with pytest.raises(ValueError, match="row 'G1' has 1 tables, expected 2"):
        heatmap_rows({"G1": (frame,)}, ["accuracy", "wins"])
    idle = frame * np.nan  # a generator that won no sample: its accuracy table is all NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heatmap_rows({"G1": (frame, frame), "G2": (idle, frame)}, ["accuracy", "wins"])
    x = np.random.default_rng(0).random((5, 1, 8, 8))
    grid = adversarial_grid(x, {"a": x, "b": x}, 3)
    assert sum(1 for ax in grid.axes if ax.images) == 9  # clean + 2 attacks, 3 images each


def test_heatmap_rows_marks_tables_without_wins_and_explains_abbreviations():
    accuracy = pd.DataFrame(np.full((3, 2), 50.0), columns=["FGSM", "PGD"])
    wins = pd.DataFrame([[1, 0], [2, 0], [0, 3]], columns=["FGSM", "PGD"])
    fig = plots.heatmap_rows(
        {"G1 (generalist)": (accuracy, wins), "G2 (marginalist)": (accuracy * np.nan, wins * 0)},
        ["accuracy (%)", "wins"],
        mark_empty="no wins",
        note="FGSM: fast gradient sign method",
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "G1 (generalist): accuracy (%)",
        "G1 (generalist): wins",
        "G2 (marginalist): accuracy (%) (no wins)",
        "G2 (marginalist): wins (no wins)",
    ]
    marked = [ax for ax in fig.axes if any(t.get_text() == "no wins" for t in ax.texts)]
    assert len(marked) == 2
    assert [t.get_text() for t in fig.texts] == ["FGSM: fast gradient sign method"]


def _overlapping_texts(fig: Figure) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (ax.title, ax.yaxis.label) if t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1 :] if box_a.overlaps(box_b)]


def test_curve_legend_sits_beside_the_axes():
    fig = small_curve()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_adversarial_grid_shows_prediction_and_success_without_overlapping_labels():
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([1, 2, 3, 4])
    clean = torch.tensor([1, 2, 3, 7])  # the model gets the last image wrong before any attack
    fooled = torch.tensor([9, 2, 9, 4])
    predictions = iter([clean, fooled, fooled])  # clean row first, then each attack's row
    classify = lambda images: next(predictions)  # noqa: E731
    fig = plots.adversarial_grid(
        x, {"salt_and_pepper@5": x.clone(), "deepfool_l2@2": x.clone()}, 4, labels=y, classify=classify
    )
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles[:4] == ["label 1\npred 1", "label 2\npred 2", "label 3\npred 3", "label 4\npred 7"]
    assert titles[4:8] == ["pred 9\nfooled", "pred 2\nheld", "pred 9\nfooled", "pred 4\nwas wrong"]
    assert _overlapping_texts(fig) == []
    with pytest.raises(ValueError, match="both labels and classify"):
        plots.adversarial_grid(x, {"a": x}, 2, labels=y)
