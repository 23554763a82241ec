"""A training's loss curve (train and distill write it as loss.png)."""

from __future__ import annotations

from pathlib import Path

from .text import plot_text, pyplot


def loss_plot(losses: list[tuple[int, float]], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
    ax.set(xlabel="optimizer step", ylabel="training loss", title=plot_text(title))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
