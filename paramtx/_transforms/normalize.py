"""``normalize``: divide each datum by its Lp norm."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from paramtx._core import validate as _validate
from paramtx._core import tree as _tree
from paramtx._core.base import EmptyState, GradientTransformation, rebuildable, stateless
from paramtx._lift import lift
from paramtx._lift.numerics import may_inspect, scaled_norm
from paramtx._lift.ops import NormOp, Result, Scaled
from paramtx._lift.settings import per_datum
from paramtx._transforms.inject import schedulable

TINY = torch.finfo(torch.float32).tiny
"""The default lower bound of a norm we divide by (rai-toolbox's ``div_by_zero_eps``)."""


def _normalized(
    y: torch.Tensor, norm: torch.Tensor, scale: Union[torch.Tensor, float], *, p: float, eps: Union[float, torch.Tensor]
) -> Result:
    # y / max(||y||, eps * scale) = x / max(||x||, eps). The divisor never falls below
    # the smallest normal number, so a zero datum stays zero even for eps = 0; the
    # (scaled) norm of a nonzero datum never comes near it (see scaled_norm).
    tiny = _TINY[norm.dtype]
    floor: Union[float, torch.Tensor]
    if isinstance(eps, torch.Tensor):  # one per datum (N, 1), or 0-d
        floor = (eps.to(norm.dtype) * scale).clamp(min=tiny)
    else:
        floor = max(eps * scale, tiny) if isinstance(scale, float) else (eps * scale).clamp(min=tiny)
    return Scaled(y, norm.clamp(min=floor), divide=True)


_TINY = {dtype: torch.finfo(dtype).tiny for dtype in (torch.float32, torch.float64)}  # of the accumulation dtypes

NORMALIZE = NormOp("normalize", order=lambda *, p, eps: p, finish=_normalized)
"""``x / max(||x||_p, eps)`` per datum."""


@schedulable("eps")
@rebuildable
def normalize(p: float = 2, param_ndim: Any = -1, eps: Union[float, torch.Tensor] = TINY) -> GradientTransformation:
    r"""Divide each datum of each update by its Lp norm: :math:`u \to u / \max(\|u\|_p, \epsilon)`.

    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). A zero
    datum maps to zero, never to NaN. The norm is scale-safe (data of norm
    1e-30 or 1e30 come out with unit norm) and accumulates half-precision data
    in float32; a datum holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced.

    Args:
        p: the norm's order, any real ``p >= 1`` or ``math.inf``.
        param_ndim: which trailing dims form one datum (``-1``: all but the first);
            per leaf, a pytree of them or a callable ``(path, shape)`` (see
            :func:`paramtx.to_batch`).
        eps: lower bound of the norm we divide by (rai-toolbox's ``div_by_zero_eps``),
            ``>= 0``: a number, or a tensor of one per datum (broadcastable to the
            batch shape; a datum whose ``eps`` is negative or NaN comes out as NaNs).

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
        >>> tx.update(torch.tensor([[3e-30, 4e-30]]), tx.init(None))[0]
        tensor([[0.6000, 0.8000]])
    """
    api = "normalize"
    p = _validate.check_p(api, p)
    param_ndim = _validate.check_param_ndim_spec(api, param_ndim)
    eps = _validate.check_setting(api, "eps", eps, _validate.NON_NEGATIVE)
    if isinstance(param_ndim, int) or param_ndim is None:
        if not isinstance(eps, torch.Tensor):  # (the common case, as lean as it can be)
            return stateless(api, lambda u: lift.map_data(api, NORMALIZE, param_ndim, u, p=p, eps=eps))

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple:
        del params
        floor = per_datum("eps", eps, _validate.NON_NEGATIVE)

        def leaf(u: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
            return lift.map_data(api, NORMALIZE, param_ndim, u, p=p, eps=floor)

        return _tree.map_updates(api, leaf, updates, param_ndim=param_ndim), state

    return GradientTransformation(lambda params: EmptyState(), update_fn)


def datum_norms(batch: torch.Tensor, p: float) -> torch.Tensor:
    """The Lp norm of each datum of a ``(N, *datum)`` batch, shape ``(N,)``, scale-safe
    (see :mod:`paramtx._lift.numerics`; half precision accumulates in float32)."""
    rows = batch.reshape(batch.shape[0], -1)
    norm = scaled_norm(rows, p, -1, inspect=may_inspect(rows))
    return (norm.norm / norm.scale).squeeze(-1)
