"""The ``param_ndim`` rule: how a tensor is seen as a batch of data.

The rule itself is documented once, publicly, on :func:`paramtx.to_batch`.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Optional

import torch


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
    """The ``(N, *datum)`` shape a tensor is viewed as (see :func:`paramtx.to_batch`)."""
    if not torch.compiler.is_compiling():
        # Every step asks again for the same few shapes, and a lookup is ~10x
        # cheaper than the arithmetic (a misfit is not cached: it raises).
        try:
            return _cached_batch_shape(tuple(shape), param_ndim)
        except (ValueError, TypeError):
            pass
    return _batch_shape(api, shape, param_ndim)


def _batch_shape(api: str, shape: torch.Size, param_ndim: Optional[int]) -> tuple[int, ...]:
    k = datum_ndim(api, shape, param_ndim)
    lead = math.prod(shape[: len(shape) - k])
    datum = tuple(shape[len(shape) - k :]) or (1,)
    return (lead, *datum)


@functools.lru_cache(maxsize=4096)
def _cached_batch_shape(shape: tuple[int, ...], param_ndim: Optional[int]) -> tuple[int, ...]:
    return _batch_shape("", torch.Size(shape), param_ndim)


def datum_size(api: str, shape: torch.Size, param_ndim: Optional[int]) -> int:
    """``D``, the number of elements in one datum of a tensor of ``shape``."""
    _, *datum = batch_shape(api, shape, param_ndim)
    return math.prod(datum)


def rows_shape(api: str, shape: torch.Size, param_ndim: Optional[int]) -> tuple[int, int]:
    """``(N, D)``: the matrix of flattened data a tensor of ``shape`` is seen as."""
    n, *datum = batch_shape(api, shape, param_ndim)
    return n, math.prod(datum)


def to_batch(param: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
    """View ``param`` as the batch ``(N, *datum)`` that ``param_ndim`` makes of it.

    **The param_ndim rule** (rai-toolbox's, used by every per-datum transform,
    projection and optimizer in paramtx). A tensor of shape
    ``(d0, ..., d{n-1})`` is a batch of ``N`` data, each with ``param_ndim`` dims:

    * ``param_ndim = k >= 0``: a datum is the last ``k`` dims (``k = 0``: each
      element is a datum, seen as shape ``(1,)``);
    * ``param_ndim = k < 0``: a datum is the last ``n + k`` dims, i.e. the first
      ``|k|`` dims are the batch (``-1``, the usual default: one datum per row
      of a weight matrix, one per image of a ``(B, C, H, W)`` perturbation);
    * ``param_ndim = None``: the whole tensor is one datum;
    * a 0-d tensor is one datum whatever ``param_ndim`` is;
    * ``|param_ndim| > n`` is a ``ValueError`` naming both.

    For ``x`` of shape ``(3, 5, 2)``:

    ==========  ======  ======  ===========  =======  =======  ============
    param_ndim  0       1       2 or -1      -2       -3       None
    batch       (30,1)  (15,2)  (3,5,2)      (15,2)   (30,1)   (1,3,5,2)
    ==========  ======  ======  ===========  =======  =======  ============

    A per-datum transform acts on each datum alone: its result on the batch is
    ``torch.func.vmap`` of its result on one datum (the reference semantics).

    **Per leaf.** Transforms and projections over a pytree also take
    ``param_ndim`` per leaf: a pytree of ints and ``None``s with the structure
    of the params (or a prefix of it: ``{"encoder": -1, "decoder": None}``
    covers every leaf below each key), or a callable ``(path, shape) -> int |
    None`` asked for each leaf (``path``: the leaf's tuple of keys), e.g.
    ``lambda path, shape: -1 if len(shape) > 1 else None`` (weights per row,
    biases whole). A misfit is an error naming the leaf's path.

    **Settings as tensors.** Where a hyperparameter applies per datum
    (``epsilon`` of the projections and of ``frank_wolfe``, ``q`` of top-q,
    ``eps`` of ``normalize``), it may be a number or a tensor broadcastable to
    the *batch shape* ``x.shape[:n - k]`` (``k`` dims per datum; or of shape
    ``(N,)``, one value per datum in the order of this batch): shape ``(N,)``
    for ``param_ndim=-1``, a 0-d tensor for one value for all, which may change
    between calls of a compiled step without a recompile. Box bounds
    (``lower``/``upper``, ``clamp``'s ``min``/``max``) are per element instead,
    tensors broadcastable to the tensor itself. Nothing reads a tensor setting
    on the host (no sync, no graph break): shapes are checked when the data are
    seen, and a datum whose setting is invalid (a radius <= 0, a ``q`` outside
    ``[0, 1]``, NaN or inf) comes out as NaNs, as a datum holding a NaN does.

    The result is a view of ``param`` (``param`` itself when it already has the
    batch shape), and, if ``param.grad`` is set, its ``.grad`` is the same view
    of ``param.grad``, so that in-place changes reach the originals, as
    rai-toolbox's ``to_batch`` promises.

    Args:
        param: the tensor.
        param_ndim: an int or ``None``, as above.

    Raises:
        TypeError: for a ``param`` that is not a tensor or a ``param_ndim`` that
            is not an int or ``None``.
        ValueError: for ``|param_ndim| > param.ndim``, or when ``param`` (or its
            gradient) has no such view, e.g. a channels-last tensor whose
            channel dim would be merged with others; ``.contiguous()`` first.

    Example:
        >>> import torch, paramtx as ptx
        >>> x = torch.zeros(3, 5, 2)
        >>> [tuple(ptx.to_batch(x, k).shape) for k in (0, 1, 2, -1, -2, -3, None)]
        [(30, 1), (15, 2), (3, 5, 2), (3, 5, 2), (15, 2), (30, 1), (1, 3, 5, 2)]
        >>> w = torch.ones(2, 3, requires_grad=True)
        >>> w.grad = torch.zeros(2, 3)
        >>> batch = ptx.to_batch(w, param_ndim=0)
        >>> _ = batch.grad.add_(1.0)                # writes through to w.grad
        >>> w.grad
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
        >>> params = {"w": torch.tensor([[3.0, 4.0], [6.0, 8.0]]), "b": torch.tensor([3.0, 4.0])}
        >>> ptx.project_l2_ball(params, epsilon=1.0, param_ndim={"w": -1, "b": None})["w"]
        tensor([[0.6000, 0.8000],
                [0.6000, 0.8000]])
        >>> ptx.project_l2_ball(params["w"], epsilon=torch.tensor([5.0, 2.5]))  # a radius per datum
        tensor([[3.0000, 4.0000],
                [1.5000, 2.0000]])
    """
    api = "to_batch"
    if not isinstance(param, torch.Tensor):
        raise TypeError(f"{api}: param must be a torch.Tensor, got {type(param).__name__}")
    if param_ndim is not None and (isinstance(param_ndim, bool) or not isinstance(param_ndim, numbers.Integral)):
        raise TypeError(
            f"{api}: param_ndim must be an int or None, got {param_ndim!r} (type {type(param_ndim).__name__})"
        )
    view = batch_view(api, param, param_ndim)
    grad = param.grad
    if grad is not None and view is not param:
        view.grad = batch_view(api, grad, param_ndim)
    return view


def batch_view(api: str, x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
    """``x`` viewed (never copied) as its ``(N, *datum)`` batch; ``x`` itself if it has that shape."""
    shape = batch_shape(api, x.shape, param_ndim)
    view = view_or_none(x, shape)
    if view is None:
        raise ValueError(
            f"{api}: a tensor of shape {tuple(x.shape)} and strides {x.stride()} has no view "
            f"of its batch shape {shape} for param_ndim={param_ndim}; call .contiguous() on it first"
        )
    return view


def view_or_none(x: torch.Tensor, shape: tuple[int, ...]) -> Optional[torch.Tensor]:
    """``x`` viewed as ``shape`` (``x`` itself if it has that shape), or ``None`` if its strides allow no such view."""
    if x.shape == shape:
        return x
    try:
        return x.view(shape)
    except RuntimeError:
        return None
