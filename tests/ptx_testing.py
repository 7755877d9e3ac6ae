"""Shared helpers and hypothesis strategies for the functional-core tests."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import optree
import torch
from hypothesis import strategies as st

import paramtx as ptx

NONE_IS_LEAF = {"none_is_leaf": True}

DEVICE = torch.device(os.environ.get("PARAMTX_TEST_DEVICE", "cpu"))
"""Where the tests run: ``PARAMTX_TEST_DEVICE`` (default ``cpu``), e.g. ``cuda``."""

FLOAT_DTYPES = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------- data


def cpu_generator(seed: int) -> torch.Generator:
    """A seeded CPU generator: draw with ``device="cpu"`` and move the result to ``DEVICE``."""
    return torch.Generator(device="cpu").manual_seed(seed)


def randn(shape: Sequence[int], dtype: torch.dtype = torch.float32, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Deterministic normal samples on ``DEVICE`` (drawn on the CPU in float64, then cast and
    moved, so every dtype and device sees the same numbers)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape), generator=generator, dtype=torch.float64, device="cpu") * scale
    return x.to(device=DEVICE, dtype=dtype)


# Leaves of every tree kind; the shapes hold data of 1, 2 and 3 dims and a scalar.
TREE_KINDS = ("tensor", "dict", "list", "tuple", "nested")


def make_tree(kind: str, dtype: torch.dtype = torch.float32, seed: int = 0, scale: float = 1.0) -> Any:
    """A pytree of random tensors of the given kind."""
    counter = iter(range(seed * 100, seed * 100 + 100))

    def leaf(*shape: int) -> torch.Tensor:
        return randn(shape, dtype, next(counter), scale)

    if kind == "tensor":
        return leaf(3, 5, 2)
    if kind == "dict":
        return {"w": leaf(3, 5, 2), "b": leaf(5), "s": leaf()}
    if kind == "list":
        return [leaf(4, 3), leaf(2)]
    if kind == "tuple":
        return (leaf(2, 2, 3), leaf(1))
    if kind == "nested":
        return {"layer": [leaf(3, 2), {"k": leaf(2, 2, 2)}], "t": (leaf(3), leaf(1, 4))}
    raise ValueError(kind)


# Shapes into which every param_ndim in -3..3 fits (a 0-d tensor is one datum whatever param_ndim is).
PARAM_NDIM_SHAPES = ((3, 5, 2), (2, 3, 1, 4), ())
ALL_PARAM_NDIMS = (None, -3, -2, -1, 0, 1, 2, 3)


def fitting_param_ndims(ndim: int) -> list[Optional[int]]:
    """Every ``param_ndim`` that fits a tensor with ``ndim`` dims."""
    if ndim == 0:
        return list(ALL_PARAM_NDIMS)
    return [None, *range(-ndim, ndim + 1)]


# ----------------------------------------------------------------------------- trees


def leaves(tree: Any) -> list[Any]:
    return optree.tree_leaves(tree, **NONE_IS_LEAF)


def structure(tree: Any) -> optree.PyTreeSpec:
    return optree.tree_structure(tree, **NONE_IS_LEAF)


def assert_trees_equal(actual: Any, expected: Any) -> None:
    """Same structure, and leaf by leaf: both ``None``, or equal tensors (dtype included), or equal values."""
    assert structure(actual) == structure(expected), (structure(actual), structure(expected))
    for a, e in zip(leaves(actual), leaves(expected)):
        if isinstance(e, torch.Tensor):
            assert isinstance(a, torch.Tensor), type(a)
            torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=False)
        else:
            assert a == e, (a, e)


def assert_trees_close(actual: Any, expected: Any, **tolerances: Any) -> None:
    assert structure(actual) == structure(expected), (structure(actual), structure(expected))
    for a, e in zip(leaves(actual), leaves(expected)):
        if isinstance(e, torch.Tensor):
            torch.testing.assert_close(a, e, **tolerances)
        else:
            assert a == e, (a, e)


def snapshot(*trees: Any) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(leaf, clone, _version) for every tensor leaf of ``trees``."""
    return [
        (leaf, leaf.detach().clone(), leaf._version)
        for tree in trees
        for leaf in leaves(tree)
        if isinstance(leaf, torch.Tensor)
    ]


def assert_untouched(snap: list[tuple[torch.Tensor, torch.Tensor, int]]) -> None:
    """No leaf was written to: same values, and its version counter did not move."""
    for leaf, before, version in snap:
        assert leaf._version == version, "an input tensor was modified in place"
        torch.testing.assert_close(leaf, before, rtol=0, atol=0, equal_nan=True)


# ----------------------------------------------------------------------------- running


def run_steps(
    tx: ptx.GradientTransformation, grads: Sequence[Any], params: Any, state: Any = None
) -> tuple[list[Any], Any, Any]:
    """Feed ``grads`` one by one, applying each update to ``params``.

    Returns the updates of every step, the final state and the final params.
    """
    state = tx.init(params) if state is None else state
    outputs = []
    for grad in grads:
        updates, state = tx.update(grad, state, params)
        outputs.append(updates)
        params = ptx.apply_updates(params, updates)
    return outputs, state, params


# ----------------------------------------------------------------------------- strategies

dtypes = st.sampled_from(FLOAT_DTYPES)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> st.SearchStrategy:
    return st.lists(
        st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims
    ).map(tuple)


@st.composite
def shape_and_param_ndim(draw, min_dims: int = 0, max_dims: int = 3, max_side: int = 4):
    shape = draw(shapes(min_dims, max_dims, max_side=max_side))
    param_ndim = draw(st.sampled_from(fitting_param_ndims(len(shape))))
    return shape, param_ndim


@st.composite
def tensors(draw, shape: Sequence[int], dtype: torch.dtype, *, zero_rows: bool = False, scale=None):
    """A random tensor: normal samples times a log-uniform scale in [1e-3, 1e3].

    The magnitudes stay where their squares neither underflow nor overflow in
    float32 (see ``test_properties`` for why). With ``zero_rows`` some elements
    are exactly zero.
    """
    seed = draw(seeds)
    if scale is None:
        scale = 10.0 ** draw(st.floats(-3, 3))
    x = randn(shape, dtype, seed, scale)
    if zero_rows and x.numel() and draw(st.booleans()):
        mask = randn(shape, torch.float64, seed + 1) > 0.3
        x = torch.where(mask, torch.zeros((), dtype=dtype), x)
    return x


def batch_view(x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
    """``x`` as ``(N, *datum)``, by the ``param_ndim`` rule under test."""
    return x.reshape(ptx.to_batch(torch.empty(x.shape, device="meta"), param_ndim).shape)


def per_datum_norm(x: torch.Tensor, p: float, param_ndim: Optional[int]) -> torch.Tensor:
    """The Lp norm of each datum, in float64, shape ``(N,)``."""
    rows = batch_view(x, param_ndim).flatten(1).to(torch.float64)
    return torch.linalg.vector_norm(rows, ord=p, dim=1)


def bytes_saved_for_backward(forward: Callable[[], torch.Tensor]) -> int:
    """The bytes autograd saves for backward while ``forward()`` runs (its output's sum is
    then back-propagated, so that whatever backward redraws runs too)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = forward()
    y.sum().backward()
    return total
