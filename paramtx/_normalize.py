"""``normalize``: divide each datum by its Lp norm."""

from __future__ import annotations

from typing import Optional, Union

import torch

from paramtx import _param_ndim, _validate
from paramtx._base import GradientTransformation, stateless

TINY = torch.finfo(torch.float32).tiny
"""The default lower bound of a norm we divide by (rai-toolbox's ``div_by_zero_eps``)."""


def norm_floor(dtype: torch.dtype, eps: float) -> float:
    """``eps``, raised to the dtype's smallest normal number if it would underflow.

    Without this, float16's norm clamp would round ``eps = 1.2e-38`` to 0 and
    a zero datum would divide 0 by 0.
    """
    return max(eps, torch.finfo(dtype).tiny)


Dims = Union[int, tuple[int, ...]]
"""The dims a datum spans: ``-1`` for a flattened datum; the datum dims of an
unflattened tensor for a sharded one (see :mod:`paramtx._sharded`)."""


def datum_norm(datum: torch.Tensor, p: float, dims: Dims = -1) -> torch.Tensor:
    """The Lp norm of a datum over ``dims``, kept as length-1 dims."""
    return torch.linalg.vector_norm(datum, ord=p, dim=dims, keepdim=True)


def normalize_divisor(datum: torch.Tensor, *, p: float, eps: float, dims: Dims = -1) -> torch.Tensor:
    """``max(||datum||_p, eps)``, kept as length-1 dims: what :func:`normalize_datum`
    divides by. (The torch.optim shims divide their gradients by it in place.)"""
    return datum_norm(datum, p, dims).clamp(min=norm_floor(datum.dtype, eps))


def normalize_datum(datum: torch.Tensor, *, p: float, eps: float, dims: Dims = -1) -> torch.Tensor:
    """``datum / max(||datum||_p, eps)``; a zero datum stays zero."""
    return datum / normalize_divisor(datum, p=p, eps=eps, dims=dims)


def normalize(p: float = 2, param_ndim: Optional[int] = -1, eps: float = TINY) -> GradientTransformation:
    r"""Divide each datum of each update by its Lp norm: :math:`u \to u / \max(\|u\|_p, \epsilon)`.

    Scope: per datum (see :mod:`paramtx._param_ndim` for the ``param_ndim`` rule).
    A zero datum maps to zero, never to NaN.
    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced (see :mod:`paramtx._sharded`).

    Args:
        p: the norm's order, any real ``p >= 1`` or ``math.inf``.
        param_ndim: which trailing dims form one datum (``-1``: all but the first).
        eps: lower bound of the norm we divide by (rai-toolbox's ``div_by_zero_eps``).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.normalize(p=2, param_ndim=-1)
        >>> g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])   # two data
        >>> tx.update(g, tx.init(None))[0]
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
        >>> ptx.normalize(p=1, param_ndim=None).update(g, ptx.EmptyState())[0]
        tensor([[0.4286, 0.5714],
                [0.0000, 0.0000]])
    """
    p = _validate.check_p("normalize", p)
    param_ndim = _validate.check_param_ndim("normalize", param_ndim)
    eps = _validate.check_real("normalize", "eps", eps, low=0.0)
    return stateless(
        "normalize",
        lambda u: _param_ndim.map_data("normalize", normalize_datum, param_ndim, u, p=p, eps=eps),
    )


