"""Heatmaps, curves, image grids and bars in one style; `save_figure` writes reproducible PNG + PDF files."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules and matplotlib.get_backend(auto_select=False) is None:
    matplotlib.use("Agg")  # scripts and tests only write files; a Jupyter kernel keeps its inline backend

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from advlib.files import atomic_write
from advlib.report import check_name
from advlib.runtime import output_dir

DPI = 150
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}


def set_style() -> None:
    """Apply the advlib figure style (seaborn whitegrid, small fonts, embedded TrueType) to matplotlib's rcParams."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.9)
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": DPI,
            "axes.titlesize": 9,
            "axes.labelsize": 8,
            "legend.fontsize": 7,
            "legend.title_fontsize": 8,
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "svg.hashsalt": "advlib",
            "image.interpolation": "nearest",
        }
    )


def _require_columns(df: pd.DataFrame, *columns: str | None) -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the dataframe; it has {list(df.columns)}")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, new_ax = plt.subplots(figsize=figsize)
    return new_ax


def heatmap(
    data: pd.DataFrame,
    *,
    title: str | None = None,
    fmt: str = ".0f",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    ax: Axes | None = None,
) -> Figure | SubFigure:
    """Annotated heatmap of a rows x columns table, e.g. accuracy per class (rows) and attack (columns)."""
    set_style()
    rows, cols = data.shape
    ax = _axes(ax, (max(3.0, 0.6 * cols + 1.8), max(2.5, 0.4 * rows + 1.2)))
    sns.heatmap(
        data,
        annot=True,
        fmt=fmt,
        vmin=vmin,
        vmax=vmax,
        cmap=cmap,
        linewidths=0.5,
        square=False,
        ax=ax,
        annot_kws={"fontsize": 7},
    )
    ax.tick_params(axis="y", rotation=0)
    if title is not None:
        ax.set_title(title)
    return ax.figure


def curves(
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    logx: bool = False,
    ax: Axes | None = None,
) -> Figure | SubFigure:
    """Lines with markers from a long-format dataframe; repeated x values are averaged with a +-1 sd band."""
    set_style()
    _require_columns(df, x, y, hue)
    ax = _axes(ax, (4.0, 3.0))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", errorbar="sd", ax=ax)
    _legend_outside(ax)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel if xlabel is not None else x)
    ax.set_ylabel(ylabel if ylabel is not None else y)
    if title is not None:
        ax.set_title(title)
    return ax.figure


def _legend_outside(ax: Axes) -> None:
    """Move the legend (if any) to the right of the axes, so that it never covers a curve or a bar."""
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def bars(
    df: pd.DataFrame, x: str, y: str, hue: str | None = None, *, title: str | None = None, ax: Axes | None = None
) -> Figure | SubFigure:
    """Bar chart from a long-format dataframe; repeated rows are averaged with +-1 sd error bars."""
    set_style()
    _require_columns(df, x, y, hue)
    ax = _axes(ax, (4.0, 3.0))
    sns.barplot(data=df, x=x, y=y, hue=hue, errorbar="sd", ax=ax)
    _legend_outside(ax)
    if title is not None:
        ax.set_title(title)
    return ax.figure


def _as_array(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):  # a torch tensor, without importing torch here
        images = images.detach().cpu().float().numpy()
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise ValueError("images is empty")
    return array


def _check_labels(kind: str, labels: Sequence[str] | None, expected: int) -> None:
    if labels is not None and len(labels) != expected:
        raise ValueError(f"{kind} has {len(labels)} entries, expected {expected}")


def image_grid(
    images: Any,
    nrow: int,
    *,
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_size: float = 1.2,
) -> Figure:
    """Images (N, C, H, W) in [0, 1] (tensor or array) laid out `nrow` per row, as torchvision's make_grid counts them.

    C = 1 is drawn in grayscale, C = 3 as RGB; `titles` go over each image, `row_labels` / `col_labels` on the margins.
    """
    set_style()
    array = np.clip(_as_array(images), 0.0, 1.0)
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    count = array.shape[0]
    cols = min(nrow, count)
    rows = math.ceil(count / cols)
    _check_labels("titles", titles, count)
    _check_labels("row_labels", row_labels, rows)
    _check_labels("col_labels", col_labels, cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(cols * cell_size, rows * cell_size))
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.axis("off")
            continue
        image = array[i]
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        row, col = divmod(i, cols)
        heading = [col_labels[col]] if col_labels is not None and row == 0 else []
        if titles is not None:
            heading.append(titles[i])
        if heading:
            ax.set_title("\n".join(heading), fontsize=7)
        if row_labels is not None and col == 0:
            ax.set_ylabel(row_labels[row], fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig


def save_figure(fig: Figure, stem: str, profile: str, name: str, *, close: bool = True) -> dict[str, Path]:
    """Write <name>.png (dpi 150) and <name>.pdf into figures/<stem>/<profile>/ without timestamps or version stamps.

    Saving the same figure twice gives byte-identical files; `close` frees the figure afterwards.
    """
    check_name(name)
    out = output_dir(stem, profile)
    paths = {
        "png": atomic_write(
            out / f"{name}.png",
            lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata=PNG_METADATA),
        ),
        "pdf": atomic_write(
            out / f"{name}.pdf",
            lambda tmp: fig.savefig(tmp, format="pdf", dpi=DPI, bbox_inches="tight", metadata=PDF_METADATA),
        ),
    }
    if close:
        plt.close(fig)
    return paths


def adversarial_grid(
    x: Any, adversarials: Mapping[str, Any], n: int, *, labels: Any = None, classify: Callable[[Any], Any] | None = None
) -> Figure:
    """Clean images in the first row and each attack's adversarials below: one row per attack, `n` columns.

    With the true `labels` and a `classify` function (images -> predicted labels), each image is titled with the
    prediction, and each adversarial with whether it fooled the model ("fooled"), did not ("held"), or started from an
    image the model already got wrong ("was wrong")."""
    rows = {"clean": x[:n], **{label: adv[:n] for label, adv in adversarials.items()}}
    images = np.concatenate([_as_array(r) for r in rows.values()])
    titles = None
    if (labels is None) != (classify is None):
        raise ValueError("adversarial_grid needs both labels and classify to title the images, or neither")
    if classify is not None:
        truth = np.asarray(labels[:n].cpu() if hasattr(labels, "cpu") else labels[:n]).astype(int)
        clean = np.asarray(_as_numpy(classify(rows["clean"]))).astype(int)
        titles = [f"label {t}\npred {p}" for t, p in zip(truth, clean)]
        for batch in list(rows.values())[1:]:
            predicted = np.asarray(_as_numpy(classify(batch))).astype(int)
            titles += [
                f"pred {p}\n{'was wrong' if c != t else 'fooled' if p != t else 'held'}"
                for t, c, p in zip(truth, clean, predicted)
            ]
    return image_grid(images, nrow=n, titles=titles, row_labels=list(rows), cell_size=1.3)


def _as_numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def heatmap_rows(
    rows: Mapping[str, Sequence[pd.DataFrame]],
    col_titles: Sequence[str],
    *,
    fmts: Sequence[str] | None = None,
    vmaxes: Sequence[float | None] | None = None,
    cell: float = 0.32,
    mark_empty: str | None = None,
    note: str | None = None,
) -> Figure:
    """A grid of annotated heatmaps with colour bars: one row per key (e.g. a generator), one column per table kind
    (e.g. accuracy per class x attack, wins per class x attack). `mark_empty` is written across, and appended to the
    title of, every table with no nonzero value (e.g. "no wins"); `note` goes under the grid (e.g. what the column
    abbreviations stand for)."""
    set_style()
    if not rows:
        raise ValueError("heatmap_rows needs at least one row of tables")
    ncols = len(col_titles)
    first = next(iter(rows.values()))[0]
    width = ncols * (cell * first.shape[1] + 2.2)
    height = len(rows) * (cell * first.shape[0] + 0.9)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(width, height), squeeze=False)
    for r, (label, frames) in enumerate(rows.items()):
        if len(frames) != ncols:
            raise ValueError(f"row {label!r} has {len(frames)} tables, expected {ncols} (one per column title)")
        for c, frame in enumerate(frames):
            ax = axes[r][c]
            vmax = vmaxes[c] if vmaxes is not None else None
            empty = not (frame.fillna(0).to_numpy() != 0).any()
            if vmax is None and empty:
                vmax = 1.0  # nothing to colour (a generator that won no sample); seaborn would warn on an all-NaN max
            fmt = fmts[c] if fmts is not None else ".0f"
            sns.heatmap(
                frame,
                annot=True,
                fmt=fmt,
                vmin=0,
                vmax=vmax,
                cmap="viridis",
                linewidths=0.3,
                annot_kws={"fontsize": 5},
                ax=ax,
                cbar=True,
                cbar_kws={"shrink": 0.8, "pad": 0.02},
            )
            ax.collections[0].colorbar.ax.tick_params(labelsize=5)
            ax.tick_params(axis="both", labelsize=6, rotation=0)
            title = f"{label}: {col_titles[c]}"
            if mark_empty and empty:
                title += f" ({mark_empty})"
                ax.text(
                    0.5,
                    0.5,
                    mark_empty,
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white",
                    fontweight="bold",
                    bbox={"facecolor": "black", "alpha": 0.6, "linewidth": 0},
                )
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    if note:  # under the axes; saving with bbox_inches="tight" (save_figure, inline display) takes it in
        fig.text(0.01, 0.0, note, fontsize=6, ha="left", va="top", wrap=True)
    return fig
