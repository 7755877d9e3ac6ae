"""``project_simplex``: the Euclidean projection onto the scaled probability simplex."""

from __future__ import annotations

from typing import Any, Union

import torch

from paramtx._core.base import Params
from paramtx._lift.ops import DatumOp, Dense, Result
from paramtx._lift.settings import operand
from paramtx._transforms.ball_box import near_bracket
from paramtx._transforms.projections import project_each_datum

_WORK = torch.float64
# Bisection on tau in [max(x) - scale, max(x)], a bracket ``scale`` wide: after k
# steps it is scale 2**-k wide. 32 steps put it 2**-8 of an ulp of ``scale`` below
# float32's resolution (2**-24), 56 steps an eighth of an ulp below float64's.
_STEPS = {torch.float64: 56}
_STEPS_DEFAULT = 32


def _onto_simplex(x: torch.Tensor, *, scale: Union[float, torch.Tensor]) -> Result:
    """``max(x - tau, 0)`` with ``tau`` such that the result sums to ``scale``, for rows ``(..., D)``.

    ``sum(max(x - tau, 0))`` is convex, piecewise linear and falls with ``tau``:
    a bisection brackets ``tau``, then one Newton step from the bracket's left
    end (``tau = (sum of the x_i > tau_lo - scale) / their count``) lands on
    ``tau`` exactly when no breakpoint ``x_i`` lies between them, and never
    beyond it (convexity), so it only narrows the bracket otherwise.
    """
    total = operand(scale, _WORK)
    v = x.to(_WORK)
    searched = v.detach()  # (the search only brackets tau; the gradient comes from the exact step)
    top = searched.amax(dim=-1, keepdim=True)
    tau_lo, tau_hi = top - total, top

    def mass(tau: torch.Tensor) -> torch.Tensor:
        return (searched - tau).clamp(min=0.0).sum(dim=-1, keepdim=True)

    for _ in range(_STEPS.get(x.dtype, _STEPS_DEFAULT)):
        mid = (tau_lo + tau_hi) / 2
        enough = mass(mid) >= total
        tau_lo, tau_hi = torch.where(enough, mid, tau_lo), torch.where(enough, tau_hi, mid)
    above = v > tau_lo
    count = above.sum(dim=-1, keepdim=True)
    tau = (torch.where(above, v, 0.0).sum(dim=-1, keepdim=True) - total) / count.clamp(min=1)
    tau = torch.where((count > 0) & near_bracket(tau, tau_lo, tau_hi), tau, tau_lo)
    # (every NaN or inf of a datum shows in its largest magnitude)
    return Dense((v - tau).clamp(min=0.0).to(x.dtype), witness=searched.abs().amax(dim=-1, keepdim=True))


SIMPLEX = DatumOp("project_simplex", _onto_simplex)
"""The projection of each datum onto ``{y >= 0, sum(y) = scale}``."""


def project_simplex(params: Params, scale: Union[float, torch.Tensor] = 1.0, param_ndim: Any = -1) -> Params:
    r"""Project each datum onto the simplex ``{y : y >= 0, sum(y) = scale}``.

    Maths: :math:`y = \max(x - \tau, 0)` with the :math:`\tau` that makes
    :math:`\sum_i y_i = scale` (the KKT solution; Held et al. 1974, Duchi et
    al. 2008). ``tau`` is found by a bisection with a fixed step count and an
    exact last (Newton) step, computed in float64 whatever the data's dtype, in
    ``O(D)`` per step (no sort): no host sync, so it compiles and vmaps.

    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). The
    result is nonnegative and sums to ``scale`` within the dtype's rounding; a
    datum holding a NaN or an inf maps to NaNs.

    Args:
        params: a tensor or a pytree of tensors.
        scale: the sum, > 0: a number, or a tensor of one value per datum
            (broadcastable to the batch shape, e.g. ``(N,)``); a datum whose
            value is not a positive finite number comes out as NaNs.
        param_ndim: which trailing dims form one datum (see :func:`paramtx.to_batch`).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_simplex(torch.tensor([[0.5, 0.25, -1.0], [2.0, 1.0, 0.0]]))
        tensor([[0.6250, 0.3750, 0.0000],
                [1.0000, 0.0000, 0.0000]])
        >>> ptx.project_simplex(torch.tensor([1.0, 1.0, 1.0, 1.0]), scale=2.0, param_ndim=None)
        tensor([0.5000, 0.5000, 0.5000, 0.5000])
    """
    return project_each_datum("project_simplex", SIMPLEX, params, param_ndim, "scale", scale)
