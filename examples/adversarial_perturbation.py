"""Per-image adversarial perturbations with ``paramtx.optim``: what paramtx is for.

1. Train a small CNN in-process on a synthetic dataset of 24x24 colour
   patterns (six classes: horizontal, vertical and diagonal stripes, rings,
   boxes, crosses; random position, scale, tint and noise -- nothing is
   downloaded).
2. Solve one perturbation per test image, all at once: a ``(B, 3, 24, 24)``
   tensor whose datum, under ``param_ndim=-1``, is one image's perturbation.
   ``L2ProjectedOptim`` keeps each inside an L2 ball (dense changes);
   ``L1qFrankWolfe`` keeps each inside an L1 ball and moves few pixels per
   step (sparse changes). Both maximize the classifier's loss.
3. Print the accuracy before and after, and save a PNG of the perturbations
   to ``examples/out/adversarial_perturbations.png``.

Run: ``MPLBACKEND=Agg python examples/adversarial_perturbation.py`` (about a
minute on 2 CPU cores). Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import math
import os
import time

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from paramtx.optim import L1qFrankWolfe, L2ProjectedOptim  # noqa: E402

SIZE, CLASSES = 24, ["horizontal", "vertical", "diagonal", "ring", "box", "cross"]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def make_patterns(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of shape (3, SIZE, SIZE) in [0, 1] and their labels."""
    labels = torch.randint(len(CLASSES), (n,), generator=generator)
    axis = torch.linspace(-1.0, 1.0, SIZE)
    y, x = axis.view(1, SIZE, 1), axis.view(1, 1, SIZE)

    def uniform(low, high):
        return (low + (high - low) * torch.rand(n, 1, 1, generator=generator))

    cx, cy, size = uniform(-0.35, 0.35), uniform(-0.35, 0.35), uniform(0.35, 0.65)
    frequency, phase = uniform(2.0, 4.0), uniform(0.0, 2 * math.pi)
    dx, dy = x - cx, y - cy
    stripes = lambda u: 0.5 + 0.5 * torch.sin(math.pi * frequency * u + phase)  # noqa: E731
    patterns = torch.stack(
        [
            stripes(y).expand(n, SIZE, SIZE),
            stripes(x).expand(n, SIZE, SIZE),
            stripes((x + y) / math.sqrt(2)),
            ((dx**2 + dy**2).sqrt() - size).abs().lt(0.12).float(),
            (dx.abs().lt(size) & dy.abs().lt(size)).float(),
            ((dx.abs().lt(0.12) & dy.abs().lt(size)) | (dy.abs().lt(0.12) & dx.abs().lt(size))).float(),
        ]
    )[labels, torch.arange(n)]
    contrast = 0.25 + 0.25 * torch.rand(n, 3, 1, 1, generator=generator)  # a random tint
    noise = 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=generator)
    return (0.5 + (patterns.unsqueeze(1) - 0.5) * contrast + noise).clamp(0.0, 1.0), labels


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (SIZE // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, len(CLASSES)),
    )


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 4) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(1)
    batches = epochs * math.ceil(len(images) / 128)
    with tqdm(total=batches, desc="training the CNN", unit="batch") as bar:
        for _ in range(epochs):
            for index in torch.randperm(len(images), generator=generator).split(128):
                loss = nn.functional.cross_entropy(model(images[index]), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}")


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(images).argmax(1) == labels).float().mean().item()


def perturb(model, images, labels, make_optimizer, steps: int, desc: str) -> torch.Tensor:
    """One perturbation per image, maximizing the loss: returns the ``(B, 3, H, W)`` perturbations."""
    delta = torch.zeros_like(images, requires_grad=True)
    optimizer = make_optimizer([delta])
    for _ in tqdm(range(steps), desc=desc, unit="step"):
        logits = model((images + delta).clamp(0.0, 1.0))
        # sum, not mean: each image's gradient is then independent of the batch size
        loss = -nn.functional.cross_entropy(logits, labels, reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return delta.detach()


def save_figure(images, labels, solutions, model, path, count: int = 6) -> None:
    rows = 1 + 2 * len(solutions)
    figure, axes = plt.subplots(rows, count, figsize=(1.6 * count + 1.2, 1.7 * rows + 0.5))
    with torch.no_grad():
        predictions = {name: model((images + delta).clamp(0, 1)).argmax(1) for name, delta in solutions.items()}
    row_labels = ["clean image\n(true class)"]
    for name in solutions:
        row_labels += [f"{name} δ\n(rescaled)", f"perturbed image\n(predicted class)"]
    for column in range(count):
        axes[0, column].imshow(images[column].permute(1, 2, 0).numpy())
        axes[0, column].set_title(CLASSES[labels[column]], fontsize=8)
        for block, (name, delta) in enumerate(solutions.items()):
            # Each δ is scaled by its own largest magnitude to fill the colour range
            # (grey is 0): the panels show where and in which direction, not how much.
            scale = delta[column].abs().max().clamp_min(1e-12)
            shown = (0.5 + 0.5 * delta[column] / scale).permute(1, 2, 0).numpy()
            axes[1 + 2 * block, column].imshow(shown)
            axes[1 + 2 * block, column].set_title(f"max |δ| {scale.item():.2f}", fontsize=7)
            perturbed = (images[column] + delta[column]).clamp(0, 1).permute(1, 2, 0).numpy()
            axes[2 + 2 * block, column].imshow(perturbed)
            axes[2 + 2 * block, column].set_title(f"→ {CLASSES[predictions[name][column]]}", fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
    for row, label in enumerate(row_labels):
        axes[row, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center", labelpad=8)
    figure.suptitle(
        "One perturbation per image (param_ndim=-1). δ rows are rescaled per image to ±max |δ| "
        "(grey = 0) so that small perturbations are visible.",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    torch.manual_seed(0)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    train_images, train_labels = make_patterns(5000, generator)
    test_images, test_labels = make_patterns(256, generator)

    model = make_model()
    train(model, train_images, train_labels)
    model.eval().requires_grad_(False)

    epsilon_l2, epsilon_l1 = 2.0, 20.0
    solutions = {
        f"L2 (ε={epsilon_l2})": perturb(
            model, test_images, test_labels,
            lambda p: L2ProjectedOptim(p, epsilon=epsilon_l2, lr=epsilon_l2 / 4, param_ndim=-1),
            steps=30, desc="L2ProjectedOptim",
        ),
        f"L1q (ε={epsilon_l1}, q=0.98)": perturb(
            model, test_images, test_labels,
            lambda p: L1qFrankWolfe(p, q=0.98, epsilon=epsilon_l1, param_ndim=-1),
            steps=30, desc="L1qFrankWolfe",
        ),
    }

    print(f"test accuracy, clean images: {accuracy(model, test_images, test_labels):.1%}")
    for name, delta in solutions.items():
        per_image = delta.flatten(1)
        print(
            f"test accuracy, {name:22s}: {accuracy(model, (test_images + delta).clamp(0, 1), test_labels):.1%}"
            f"   (max L2 {per_image.norm(dim=1).max():.3f}, max L1 {per_image.norm(p=1, dim=1).max():.3f}, "
            f"mean nonzero pixels {(per_image != 0).sum(1).float().mean():.0f} of {per_image.shape[1]})"
        )
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "adversarial_perturbations.png")
    save_figure(test_images, test_labels, solutions, model, path)
    print(f"saved {os.path.relpath(path)} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
