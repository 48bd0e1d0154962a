"""Plots written as PNG files (matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycl.io import atomic_save

__all__ = ["plot_accuracy"]


def plot_accuracy(curves: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """One line per strategy: accuracy on all classes seen after each experience."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, acc in curves.items():
        acc = np.asarray(acc, dtype=float)
        ax.plot(np.arange(len(acc)), 100 * acc, marker="o", label=label)
    ax.set_xlabel("experience")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("accuracy on classes seen (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    atomic_save(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
