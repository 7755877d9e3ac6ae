"""The benchmark workloads shared by every benchmark script, and a small timer.

W1: a batch of 256 perturbations of shape (3, 32, 32), ``param_ndim=-1``.
W2: 64 perturbations of shape (3, 224, 224).
W3: the parameter tensors of a ResNet-18 (shapes written out here, so no
    torchvision is needed): 62 tensors, 11.69M values.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable

import torch

import paramtx as ptx


def resnet18_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's ``resnet18()``, in ``parameters()`` order."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    width_in = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            first = block == 0
            shapes += [(width, width_in if first else width, 3, 3), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            if first and (stride != 1 or width_in != width):
                shapes += [(width, width_in, 1, 1), (width,), (width,)]
        width_in = width
    shapes += [(1000, 512), (1000,)]
    return shapes


def make_tensors(shapes, seed: int = 0, scale: float = 0.05) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Random parameters (small, so projections bind on some data) and gradients."""
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=generator) * scale for s in shapes]
    grads = [torch.randn(s, generator=generator) for s in shapes]
    return params, grads


WORKLOADS = {
    "W1": [(256, 3, 32, 32)],
    "W2": [(64, 3, 224, 224)],
    "W3": resnet18_shapes(),
}


def median_ms(fn: Callable[[], object], *, repeats: int = 25, warmup: int = 3, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def functional_step(tx: ptx.GradientTransformation, params, grads, project=None) -> Callable[[], object]:
    """One functional step: ``tx.update`` + ``apply_updates`` (+ ``project``), its state carried over."""
    state = [tx.init(params)]

    def step():
        updates, state[0] = tx.update(grads, state[0], params)
        new_params = ptx.apply_updates(params, updates)
        return project(new_params) if project is not None else new_params

    return step


def optimizer_step(make: Callable, params, grads) -> Callable[[], object]:
    """``make(leaves).step`` on copies of ``params`` whose ``.grad`` is already set."""
    leaves = [torch.nn.Parameter(p.clone()) for p in params]
    for leaf, grad in zip(leaves, grads):
        leaf.grad = grad.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = make(leaves)

    def step():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rai-toolbox's TypedStorage deprecation warning
            optimizer.step()

    return step
