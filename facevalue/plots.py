"""Plots shared by training (curves, confusion matrix) and the HTML report.

One module, one look: every figure facevalue draws comes from here. matplotlib is imported
inside each function, so scoring never pays for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

STYLE = {"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "font.size": 9}


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


def plot_confusion(matrix: np.ndarray, labels: list[str] | tuple[str, ...],
                   out_png: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true label), with counts in each cell."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{matrix[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out_png)
        plt.close(fig)
    return Path(out_png)
