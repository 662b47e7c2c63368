"""Plots shared by training (curves, confusion matrix) and the HTML report.

One module, one look: every figure facevalue draws comes from here. matplotlib is imported
inside each function, so scoring never pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "font.size": 9}

# One colour per FER2013 class (tab10 hues), shared by the plots and the HTML report's bars.
EMOTION_COLORS = {"anger": "#d62728", "disgust": "#8c564b", "fear": "#9467bd",
                  "happiness": "#ff7f0e", "sadness": "#1f77b4", "surprise": "#17becf",
                  "neutral": "#7f7f7f"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(log_csv: str | Path, out_png: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, training against validation, from a Keras CSV log."""
    plt = _pyplot()
    frame = pd.read_csv(log_csv)
    with plt.rc_context(STYLE):
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(frame["epoch"] + 1, frame[key], label="training")
            ax.plot(frame["epoch"] + 1, frame[f"val_{key}"], label="PublicTest")
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
            ax.legend()
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out_png)
        plt.close(fig)
    return Path(out_png)


def plot_confusion(matrix: np.ndarray | Sequence[Sequence[int]],
                   labels: list[str] | tuple[str, ...], out_png: str | Path, title: str = "",
                   columns: list[str] | tuple[str, ...] | None = None) -> Path:
    """Row-normalised confusion matrix (rows: true label), with counts in each cell.

    ``columns`` names the predictions when they differ from the rows (photos: a last column
    for those without a scored face).
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    columns = labels if columns is None else columns
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(labels)):
            for j in range(len(columns)):
                ax.text(j, i, f"{matrix[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out_png)
        plt.close(fig)
    return Path(out_png)


def plot_emotion_distributions(companies: pd.DataFrame, out_png: str | Path | BinaryIO,
                               title: str = "") -> str | Path | BinaryIO:
    """Each emotion's mean probability across companies: a box per emotion, a dot per company.

    A box and a dot per company read well for three companies and for three thousand, which
    per-emotion histograms do not. ``out_png`` may be a path or a binary file object (the
    report embeds the PNG without touching the disk).
    """
    plt = _pyplot()
    labels = [label for label in EMOTION_COLORS if label in companies.columns]
    values = [companies[label].dropna().to_numpy(float) for label in labels]
    rng = np.random.default_rng(0)  # fixed jitter: the same table draws the same picture
    with plt.rc_context({**STYLE, "axes.grid.axis": "y"}):
        fig, ax = plt.subplots(figsize=(9, 3.3))
        many = len(companies) > 50  # then dots become a cloud and the box must stay visible
        for i, (label, column) in enumerate(zip(labels, values, strict=True)):
            jitter = rng.uniform(-0.2, 0.2, len(column))
            ax.scatter(i + jitter, column, s=6 if many else 28, alpha=0.35 if many else 0.8,
                       color=EMOTION_COLORS[label], edgecolors="none", zorder=2 if many else 4)
        ax.boxplot(values, positions=range(len(labels)), widths=0.55, showfliers=False,
                   zorder=3, boxprops={"linewidth": 1.2}, whiskerprops={"linewidth": 1.2},
                   medianprops={"color": "black", "linewidth": 2})
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean probability per company")
        ax.set_title(title or f"Emotions across {len(companies)} companies")
        fig.tight_layout()
        fig.savefig(out_png, format="png")
        plt.close(fig)
    return out_png


def plot_emotions_over_time(frames: pd.DataFrame, out_png: str | Path | BinaryIO,
                            title: str = "") -> str | Path | BinaryIO:
    """A video's main-track probabilities over time: a line per emotion, small.

    ``frames`` has a ``time`` column (seconds) and the emotions; a sampled time without the
    main track holds NaN there, and the lines break at it rather than bridge a cut to
    someone else. Long videos are drawn in minutes.
    """
    plt = _pyplot()
    labels = [label for label in EMOTION_COLORS if label in frames.columns]
    ordered = frames.sort_values("time")
    minutes = ordered["time"].max() > 180
    x = ordered["time"] / 60 if minutes else ordered["time"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.2, 2.1))
        for label in labels:
            ax.plot(x, ordered[label], color=EMOTION_COLORS[label], linewidth=1.2,
                    marker="." if len(ordered) <= 60 else None, markersize=3, label=label)
        ax.set_ylim(0, 1)
        ax.set_xlim(left=0)
        ax.set_xlabel("minutes" if minutes else "seconds")
        ax.set_ylabel("probability")
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(out_png, format="png")
        plt.close(fig)
    return out_png
