"""The ``param_ndim`` rule: how a tensor is seen as a batch of data.

A tensor of shape ``(d0, ..., d{n-1})`` is viewed as a batch ``(N, *datum)``:

* ``param_ndim = k >= 0``: the datum is the last ``k`` dims;
* ``param_ndim = k < 0``: the datum is the last ``n + k`` dims;
* ``param_ndim = None``: the whole tensor is one datum.

For ``x`` of shape ``(3, 5, 2)``: ``0 -> (30, 1)``, ``1 -> (15, 2)``,
``2`` or ``-1 -> (3, 5, 2)``, ``-2 -> (15, 2)``, ``-3 -> (30, 1)``,
``None -> (1, 3, 5, 2)``. A 0-d tensor is one datum whatever ``param_ndim`` is.
``|param_ndim| > ndim`` is a ``ValueError``.

Every per-datum transform is written as a function of ONE flattened datum and
lifted to the batch by :func:`map_data`. Its reference semantics is
``torch.func.vmap`` over the data. The datum functions in paramtx only use
reductions, sorts, gathers and scatters along ``dim=-1``, so the same function
applied to the ``(N, D)`` matrix of flattened data computes every datum at once;
that row-batched path skips vmap's per-call overhead (it matters for models
with many small tensors) and is what :func:`map_data` takes unless
:func:`vmap_reference` is active. Tests check that both paths agree.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional

import torch

from paramtx import _sharded

_state = {"use_vmap": False}


@contextlib.contextmanager
def vmap_reference() -> Iterator[None]:
    """Within this block, :func:`map_data` lifts datum functions with ``vmap``."""
    previous = _state["use_vmap"]
    _state["use_vmap"] = True
    try:
        yield
    finally:
        _state["use_vmap"] = previous


def vmap_reference_active() -> bool:
    """Whether :func:`vmap_reference` is in force (in-place fast paths then step aside)."""
    return _state["use_vmap"]


def datum_ndim(api: str, shape: torch.Size, param_ndim: Optional[int]) -> int:
    """How many trailing dims of ``shape`` form one datum."""
    ndim = len(shape)
    if ndim == 0 or param_ndim is None:
        return ndim
    if abs(param_ndim) > ndim:
        raise ValueError(
            f"{api}: param_ndim={param_ndim} does not fit a tensor with ndim={ndim} "
            f"(shape {tuple(shape)}); |param_ndim| <= ndim must hold"
        )
    return param_ndim if param_ndim >= 0 else ndim + param_ndim


def batch_shape(api: str, shape: torch.Size, param_ndim: Optional[int]) -> tuple[int, ...]:
    """The ``(N, *datum)`` shape a tensor is viewed as (see the module doc)."""
    k = datum_ndim(api, shape, param_ndim)
    lead = math.prod(shape[: len(shape) - k])
    datum = tuple(shape[len(shape) - k :]) or (1,)
    return (lead, *datum)


def as_rows(api: str, x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
    """``x`` as an ``(N, D)`` matrix: one flattened datum per row."""
    n, *datum = batch_shape(api, x.shape, param_ndim)
    return x.reshape(n, math.prod(datum))


def datum_size(api: str, x: torch.Tensor, param_ndim: Optional[int]) -> int:
    """``D``, the number of elements in one datum of ``x``."""
    _, *datum = batch_shape(api, x.shape, param_ndim)
    return math.prod(datum)


def map_data(
    api: str,
    datum_fn: Callable[..., torch.Tensor],
    param_ndim: Optional[int],
    *tensors: torch.Tensor,
    **options: object,
) -> torch.Tensor:
    """Apply ``datum_fn(*data, **options)`` to each datum of same-shaped ``tensors``.

    ``datum_fn`` takes flattened data of shape ``(D,)`` and returns a ``(D,)``
    result; the output has the shape of ``tensors[0]``. DTensors (sharded across
    ranks) go to :func:`paramtx._sharded.map_data`, which gives the same result.
    """
    if _sharded.is_dtensor(tensors[0]):
        return _sharded.map_data(api, datum_fn, param_ndim, *tensors, **options)
    shape = tensors[0].shape
    rows = [as_rows(api, t, param_ndim) for t in tensors]
    if rows[0].numel() == 0:  # no datum has an element (D = 0 or N = 0): nothing to compute
        return tensors[0].clone()
    if vmap_reference_active():
        out = torch.func.vmap(lambda *data: datum_fn(*data, **options))(*rows)
    else:
        out = datum_fn(*rows, **options)
    return out.reshape(shape)
