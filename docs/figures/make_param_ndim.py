"""Draw the param_ndim pictures of the docs (writes the PNGs beside this file).

Each element of a tensor is coloured by the datum it belongs to, as
``paramtx.to_batch`` groups them: the pictures are computed from the rule, not
drawn by hand. Run after changing the rule or the pictures:

    python docs/figures/make_param_ndim.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

import paramtx as ptx  # noqa: E402

HERE = Path(__file__).parent
COLOURS = ListedColormap(plt.get_cmap("tab20").colors)


def datum_index(shape: tuple[int, ...], param_ndim: int | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Each element's datum number (same shape as the tensor), and the batch view's shape."""
    x = torch.arange(torch.Size(shape).numel()).reshape(shape)
    batch = ptx.to_batch(x, param_ndim)  # (N, *datum)
    numbers = torch.arange(batch.shape[0]).view(-1, *([1] * (batch.dim() - 1))).expand(batch.shape)
    index = torch.empty(x.numel(), dtype=torch.long)
    index[batch.reshape(-1)] = numbers.reshape(-1)  # where each element of x went
    return index.reshape(shape), tuple(batch.shape)


def draw_grid(ax, numbers: torch.Tensor, origin: tuple[float, float]) -> None:
    """One 2-d slab: a cell per element, coloured and labelled by its datum number."""
    rows, cols = numbers.shape
    x0, y0 = origin
    for r in range(rows):
        for c in range(cols):
            n = int(numbers[r, c])
            ax.add_patch(plt.Rectangle((x0 + c, y0 - r - 1), 1, 1, facecolor=COLOURS(n % 20), edgecolor="white", lw=1.5))
            ax.text(x0 + c + 0.5, y0 - r - 0.5, str(n), ha="center", va="center", fontsize=7)


def title(param_ndim: int | None, shape: tuple[int, ...], batch_shape: tuple[int, ...]) -> str:
    datum = batch_shape[1:] if len(batch_shape) > 1 else ()
    return f"param_ndim={param_ndim}\n{batch_shape[0]} data of shape {tuple(datum)}"


def matrix_figure(path: Path) -> None:
    """A (4, 3) weight matrix under param_ndim 0, 1 (= -1) and None (= 2, -2)."""
    shape = (4, 3)
    settings = [0, 1, -1, None]
    fig, axes = plt.subplots(1, len(settings), figsize=(2.4 * len(settings), 2.8))
    for ax, k in zip(axes, settings):
        numbers, batch_shape = datum_index(shape, k)
        draw_grid(ax, numbers, (0, 0))
        ax.set_xlim(-0.2, shape[1] + 0.2)
        ax.set_ylim(-shape[0] - 0.2, 0.2)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(title(k, shape, batch_shape), fontsize=9)
    fig.suptitle("A (4, 3) tensor: each colour (and number) is one datum", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tensor3_figure(path: Path) -> None:
    """A (3, 5, 2) tensor, drawn as 3 slabs of (5, 2), under every param_ndim of the rule's table."""
    shape = (3, 5, 2)
    settings = [0, 1, 2, -1, -2, -3, None]
    fig, axes = plt.subplots(2, 4, figsize=(9.6, 5.6))
    axes[1, 3].set_axis_off()  # seven settings on a grid of eight
    for ax, k in zip(axes.flat, settings):
        numbers, batch_shape = datum_index(shape, k)
        for slab in range(shape[0]):
            draw_grid(ax, numbers[slab], (slab * (shape[2] + 0.6), 0))
        ax.set_xlim(-0.2, shape[0] * (shape[2] + 0.6))
        ax.set_ylim(-shape[1] - 0.2, 0.2)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(title(k, shape, batch_shape), fontsize=9)
    fig.suptitle("A (3, 5, 2) tensor, drawn as x[0], x[1], x[2] side by side: each colour is one datum", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    matrix_figure(HERE / "param_ndim_matrix.png")
    tensor3_figure(HERE / "param_ndim_3d.png")
    print("wrote", HERE / "param_ndim_matrix.png", "and", HERE / "param_ndim_3d.png")
