"""Linear minimization oracles (LMOs) for Frank-Wolfe: unit-ball directions.

For a gradient ``g`` and the unit ball ``B`` of a norm, the LMO direction is
``s = argmax_{s in B} <g, s>``; Frank-Wolfe then moves towards ``-epsilon * s``
(see :func:`paramtx.frank_wolfe`). Each oracle acts per datum.
"""

from __future__ import annotations

from typing import Optional

import torch

from paramtx import _param_ndim, _validate
from paramtx._base import GradientTransformation, stateless
from paramtx._normalize import TINY, normalize, normalize_datum
from paramtx._elementwise import sign
from paramtx._top_q import sparsifying_transform, top_q_datum, top_q_indices


def l1_lmo_datum(datum: torch.Tensor) -> torch.Tensor:
    """A one-hot sign at the (first) largest-magnitude element of a flattened datum."""
    index = datum.abs().argmax(dim=-1, keepdim=True)
    return torch.zeros_like(datum).scatter(-1, index, datum.gather(-1, index).sign())


def l1q_lmo_datum(datum: torch.Tensor, *, keep: int, eps: float) -> torch.Tensor:
    """The L1-normalized sign of the datum's ``keep`` largest-magnitude elements.

    Equal to ``normalize(sign(top_q(datum)), p=1)`` bit for bit, but the signs
    are normalized before they are scattered, touching ``keep`` elements rather
    than the whole datum: their L1 norm is a count of +-1s, exact in any order.
    """
    if keep <= 0 or keep >= datum.shape[-1]:
        return normalize_datum(top_q_datum(datum, keep=keep).sign(), p=1.0, eps=eps)
    index = top_q_indices(datum, keep=keep)
    kept = normalize_datum(datum.gather(-1, index).sign(), p=1.0, eps=eps)
    return torch.zeros_like(datum).scatter(-1, index, kept)


def lmo_l1(param_ndim: Optional[int] = -1) -> GradientTransformation:
    """The L1-ball LMO: a one-hot sign at the largest-magnitude element of each datum.

    Scope: per datum, the argmax taken over the whole datum whatever its number
    of dims (ties go to the first element in row-major order). A zero datum
    maps to zero.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded (see :mod:`paramtx._sharded`).

    Example:
        >>> import torch, paramtx as ptx
        >>> g = torch.tensor([[0.5, -3.0, 1.0], [2.0, 0.0, -1.0]])
        >>> tx = ptx.lmo_l1(param_ndim=-1)
        >>> tx.update(g, tx.init(None))[0]
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.]])
    """
    param_ndim = _validate.check_param_ndim("lmo_l1", param_ndim)
    return stateless("lmo_l1", lambda u: _param_ndim.map_data("lmo_l1", l1_lmo_datum, param_ndim, u))


def lmo_l1q(
    q: float,
    dq: float = 0.0,
    param_ndim: Optional[int] = -1,
    seed: int = 0,
    eps: float = TINY,
) -> GradientTransformation:
    """The sparse L1 LMO: top-q, then sign, then L1-normalize, per datum.

    Scope: per datum. Keeps the signs of the ``round((1 - q) * D)``
    largest-magnitude elements and scales them to unit L1 norm. ``q``, ``dq``
    and ``seed`` act as in :func:`paramtx.top_q`, whose :class:`TopQState` this
    transform also uses.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded (see :mod:`paramtx._sharded`).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.lmo_l1q(q=0.3, param_ndim=None)    # keep round(0.7 * 3) = 2
        >>> tx.update(torch.tensor([0.0, 1.0, 2.0]), tx.init(None))[0]
        tensor([0.0000, 0.5000, 0.5000])
    """
    eps = _validate.check_real("lmo_l1q", "eps", eps, low=0.0)
    return sparsifying_transform(
        "lmo_l1q", l1q_lmo_datum, q=q, dq=dq, param_ndim=param_ndim, seed=seed, eps=eps
    )


def lmo_l2(param_ndim: Optional[int] = -1, eps: float = TINY) -> GradientTransformation:
    """The L2-ball LMO, ``g / ||g||_2`` per datum: the same map as ``normalize(p=2)``.

    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced (see :mod:`paramtx._sharded`).

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.lmo_l2(param_ndim=None)
        >>> tx.update(torch.tensor([3.0, -4.0]), tx.init(None))[0]
        tensor([ 0.6000, -0.8000])
    """
    return normalize(p=2, param_ndim=param_ndim, eps=eps)


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
