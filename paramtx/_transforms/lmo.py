"""Linear minimization oracles (LMOs) for Frank-Wolfe: unit-ball directions.

For a gradient ``g`` and the unit ball ``B`` of a norm, the LMO direction is
``s = argmax_{s in B} <g, s>``; Frank-Wolfe then moves towards ``-epsilon * s``
(see :func:`paramtx.frank_wolfe`). Each oracle acts per datum.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import EmptyState, GradientTransformation, rebuildable, stateless
from paramtx._lift import lift
from paramtx._lift.numerics import accumulation_dtype
from paramtx._lift.ops import DatumOp, Dense, Result, Scaled, Scattered
from paramtx._transforms.elementwise import sign
from paramtx._transforms.inject import schedulable
from paramtx._transforms.normalize import TINY, normalize
from paramtx._transforms.top_q import select_largest, sparsifying_transform


def _l1_lmo(x: torch.Tensor) -> Result:
    # The first largest magnitude (row-major order) gets the sign of its element.
    index = x.abs().argmax(dim=-1, keepdim=True)
    largest = x.gather(-1, index)  # argmax takes a NaN first, then an inf
    return Scattered(x, index, largest.sign(), witness=largest)


L1_LMO = DatumOp("lmo_l1", _l1_lmo)
"""A one-hot sign at the (first) largest-magnitude element of each datum."""


def _count(signs: torch.Tensor) -> torch.Tensor:
    # The L1 norm of a vector of -1, 0 and 1: a count, exact in any order.
    return signs.abs().sum(-1, keepdim=True, dtype=accumulation_dtype(signs.dtype))


def _l1q_lmo(x: torch.Tensor, *, keep: Union[int, torch.Tensor], bound: int, eps: Union[float, torch.Tensor]) -> Result:
    # normalize(sign(top_q(x)), p=1), with the signs normalized before they are
    # scattered: the norm and the division touch the kept entries, not the datum.
    if isinstance(eps, torch.Tensor):  # one per datum (N, 1), or 0-d: in the count's dtype
        eps = eps.to(accumulation_dtype(x.dtype))
    k = min(bound, x.shape[-1])
    if k <= 0:
        return Dense(torch.zeros_like(x))
    if isinstance(keep, int) and k >= x.shape[-1]:
        signs = x.sign()
        return Scaled(signs, _count(signs).clamp(min=eps), divide=True)
    index, largest, kept = select_largest(x, k, keep)
    signs = largest.sign() if kept is None else torch.where(kept, largest.sign(), 0)
    return Scattered(x, index, signs / _count(signs).clamp(min=eps), witness=largest)


L1Q_LMO = DatumOp("lmo_l1q", _l1q_lmo)
"""The L1-normalized sign of the ``keep`` largest magnitudes of each datum (see ``TOP_Q``)."""


@rebuildable
def lmo_l1(param_ndim: Any = -1) -> GradientTransformation:
    """The L1-ball LMO: a one-hot sign at the largest-magnitude element of each datum.

    Scope: per datum, the argmax taken over the whole datum whatever its number
    of dims (ties go to the first element in row-major order). A zero datum
    maps to zero; a datum holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded.

    Example:
        >>> import torch, paramtx as ptx
        >>> g = torch.tensor([[0.5, -3.0, 1.0], [2.0, 0.0, -1.0]])
        >>> tx = ptx.lmo_l1(param_ndim=-1)
        >>> tx.update(g, tx.init(None))[0]
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.]])
    """
    param_ndim = _validate.check_param_ndim_spec("lmo_l1", param_ndim)
    if param_ndim is None or isinstance(param_ndim, int):
        return stateless("lmo_l1", lambda u: lift.map_data("lmo_l1", L1_LMO, param_ndim, u))

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple:
        del params
        leaf = lambda u, param_ndim: lift.map_data("lmo_l1", L1_LMO, param_ndim, u)  # noqa: E731
        return _tree.map_updates("lmo_l1", leaf, updates, param_ndim=param_ndim), state

    return GradientTransformation(lambda params: EmptyState(), update_fn)


@schedulable("q")
@rebuildable
def lmo_l1q(
    q: Union[float, torch.Tensor],
    dq: float = 0.0,
    param_ndim: Any = -1,
    seed: int = 0,
    eps: Union[float, torch.Tensor] = TINY,
) -> GradientTransformation:
    """The sparse L1 LMO: top-q, then sign, then L1-normalize, per datum.

    Scope: per datum. Keeps the signs of the ``round((1 - q) * D)``
    largest-magnitude elements and scales them to unit L1 norm. ``q``, ``dq``
    and ``seed`` act as in :func:`paramtx.top_q`, whose :class:`TopQState` this
    transform also uses (``q`` and ``eps`` may be tensors of one per datum, and
    ``param_ndim`` given per leaf, as there). A datum holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.lmo_l1q(q=0.3, param_ndim=None)    # keep round(0.7 * 3) = 2
        >>> tx.update(torch.tensor([0.0, 1.0, 2.0]), tx.init(None))[0]
        tensor([0.0000, 0.5000, 0.5000])
    """
    eps = _validate.check_setting("lmo_l1q", "eps", eps, _validate.NON_NEGATIVE)
    return sparsifying_transform("lmo_l1q", L1Q_LMO, q=q, dq=dq, param_ndim=param_ndim, seed=seed, eps=eps)


@rebuildable
def lmo_l2(param_ndim: Any = -1, eps: Union[float, torch.Tensor] = TINY) -> GradientTransformation:
    """The L2-ball LMO, ``g / ||g||_2`` per datum: the same map as ``normalize(p=2)``.

    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`);
    ``param_ndim`` and ``eps`` as in :func:`paramtx.normalize`.

    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.lmo_l2(param_ndim=None)
        >>> tx.update(torch.tensor([3.0, -4.0]), tx.init(None))[0]
        tensor([ 0.6000, -0.8000])
    """
    return normalize(p=2, param_ndim=param_ndim, eps=eps)


@rebuildable
def lmo_linf() -> GradientTransformation:
    """The L-infinity-ball LMO, ``sign(g)``: the same map as :func:`paramtx.sign`.

    Scope: per element.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.lmo_linf()
        >>> tx.update(torch.tensor([3.0, 0.0, -4.0]), tx.init(None))[0]
        tensor([ 1.,  0., -1.])
    """
    return sign()
