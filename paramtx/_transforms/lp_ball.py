"""``project_lp_ball``: the exact Euclidean projection onto an Lp ball for any real ``p > 1``."""

from __future__ import annotations

import math
from typing import Any, Union

import torch

from paramtx._core import validate as _validate
from paramtx._core.base import Params
from paramtx._lift.numerics import rounded_towards_zero
from paramtx._lift.ops import DatumOp, Dense, Result
from paramtx._lift.settings import operand
from paramtx._transforms.ball_box import near_bracket
from paramtx._transforms.projections import project_each_datum

_WORK = torch.float64
_LN2 = math.log(2.0)
# The outer search runs on log2(c) over a bracket 1100 (< 2**11) wide. Each step
# tries 15 evenly spaced points at once (a 16-section: 4 bits a step, and a
# quarter of the steps of a bisection for torch.compile to trace). A relative
# error delta in c moves the result by at most delta relative, so a width of
# 2**-30 (float32 and half data: below their rounding) takes (11 + 30) / 4 -> 11
# steps, and 2**-53 (float64) takes 16.
_SECTIONS = 16
_OUTER_STEPS = {torch.float64: 16}
_OUTER_STEPS_DEFAULT = 11
_BRACKET_LOG2 = 1100.0
_TINY = torch.finfo(_WORK).tiny


def _inner_steps(q: float, dtype: torch.dtype) -> int:
    """Newton steps for ``e^w + e^(log_k + q w) = 1`` from ``w0 = min(0, -log_k / q)``.

    The root lies below ``w0`` by at most ``ln 2 max(1, 1/q)`` (see
    :func:`_log_ratio`). On the convex, increasing left side, Newton from the
    right never overshoots, and for a dominant term ``e^(q w)`` the error
    ``z = q (w - w*)`` maps to ``z - (1 - e^-z)``: from ``z <= ln 2`` that is
    0.19, 0.017, 1.4e-4, 1e-8, 5e-17: float64's resolution in 5 steps (6 with
    margin), 1e-8 in 4 (below float32's rounding, 6e-8; for float32 and half
    data). A larger ``z <= q ln 2`` (``p > 2``) first falls by about 1 per step.
    A smaller ``q`` (``p < 2``) starts up to ``ln 2 / q`` away, in the flat
    ``e^(q w)``: each halving of ``q`` costs about half a step more (measured
    over ``log_k`` in [-700, 700] for ``q`` from 1e-4 to 1: the counts below
    reach 1e-9 for float32 and 4e-16 relative for float64; 4 steps at q = 0.1
    left 1.7e-4).
    """
    if q < 1.0:
        extra = math.ceil(math.log2(1.0 / q) / 2)
    else:
        extra = max(0, math.ceil(q * _LN2 - _LN2))
    return (6 if dtype == torch.float64 else 4) + extra


def _log_ratio(log_a: torch.Tensor, log_c: torch.Tensor, q: float, steps: int) -> torch.Tensor:
    """``w = log(g / a)`` per element, where ``g + c g^q = a`` (``g`` in ``(0, a]``, ``a > 0``).

    With ``u = g / a``: ``u + k u^q = 1``, ``k = c a^(q - 1)``; in ``w = log u``
    that is ``psi(w) = e^w + e^(log_k + q w) - 1 = 0``, convex and increasing in
    ``w``. The root satisfies ``u <= min(1, k^(-1/q))`` (each term is at most 1)
    and ``u >= min(1/2, (2k)^(-1/q))`` (one term is at least 1/2), so Newton
    starts at the upper bound, within ``ln 2 max(1, 1/q)`` of the root. Computed
    in logs throughout: no power over- or underflows.
    """
    log_k = log_c + (q - 1.0) * log_a
    w = torch.minimum(torch.zeros_like(log_k), -log_k / q)
    for _ in range(steps):
        first, second = torch.exp(w), torch.exp(log_k + q * w)
        w = w - (first + second - 1.0) / (first + q * second)
    return w


def _into_lp_ball(x: torch.Tensor, *, p: float, epsilon: Union[float, torch.Tensor]) -> Result:
    """The projection onto ``{||y||_p <= epsilon}`` of rows ``(..., D)``.

    KKT: ``y_i = sign(x_i) g_i`` with ``g_i + c g_i^(p-1) = |x_i|`` (``c = lambda p``)
    and ``sum g_i^p = epsilon^p``, or ``y = x`` inside the ball. In units of
    ``epsilon`` (``a = |x| / epsilon``, radius 1), ``sum g^p`` falls as ``c``
    grows; ``c`` is bisected in log space with a fixed step count (see
    ``_OUTER_STEPS``, a 16-section), each ``g`` solved by :func:`_log_ratio`.
    """
    q = p - 1.0
    inner = _inner_steps(q, x.dtype)
    radius = operand(epsilon, _WORK)
    v = x.to(_WORK)
    present = v != 0
    # log(|x| / epsilon). A zero element stays zero (y = x * ratio); its ratio, the
    # derivative of the result there, is that of the limit |x| -> 0: the smallest
    # normal number stands in for |x| (the log keeps every power finite).
    log_radius = torch.log(radius) if isinstance(radius, torch.Tensor) else math.log(radius)
    log_a = torch.log(torch.where(present, v.abs(), _TINY)) - log_radius
    searched = log_a.detach()  # (the search only brackets c; the gradient comes from the last step)

    def mass(w: torch.Tensor) -> torch.Tensor:  # sum g^p, in units of epsilon^p
        return torch.where(present, torch.exp(p * (searched + w)), 0.0).sum(dim=-1, keepdim=True)

    inside = mass(torch.zeros_like(log_a)) <= 1.0
    # c >= max(a) D^(q/p) puts every g <= (a / c)^(1/q) <= D^(-1/p): inside the ball
    count = x.shape[-1]
    log2_hi = (torch.where(present, searched, -math.inf).amax(dim=-1, keepdim=True) + (q / p) * math.log(count)) / _LN2
    log2_hi = torch.where(torch.isfinite(log2_hi), log2_hi, 0.0)  # (a zero datum: inside anyway)
    log2_lo = log2_hi - _BRACKET_LOG2
    # the tried points' fractions of the bracket, along a new leading dim
    fractions = torch.arange(1, _SECTIONS, dtype=_WORK, device=x.device).reshape(-1, *([1] * x.dim()))
    for _ in range(_OUTER_STEPS.get(x.dtype, _OUTER_STEPS_DEFAULT)):
        width = (log2_hi - log2_lo) / _SECTIONS
        tried = log2_lo + width * fractions
        # sum g^p falls as c grows: the points that do not fit come first
        misses = (mass(_log_ratio(searched, tried * _LN2, q, inner)) > 1.0).sum(dim=0)
        log2_lo, log2_hi = log2_lo + width * misses, log2_lo + width * (misses + 1)
    # One Newton step on the constraint from the bracket's end: it moves the end by the
    # bracket's width at most (so no more than rounding), and it carries the dependence
    # of lambda on x (the implicit function theorem) into the result's gradient.
    log_c = log2_hi * _LN2
    w = _log_ratio(log_a, log_c, q, inner)
    first, second = torch.exp(w), torch.exp(log_c + (q - 1.0) * log_a + q * w)
    slope = -second / (first + q * second)  # dw / dlog(c), from psi(w) = 0
    powers = torch.where(present, torch.exp(p * (log_a + w)), 0.0)
    descent = (p * powers * slope).sum(dim=-1, keepdim=True)  # < 0, or 0 for a zero datum
    usable = descent < 0
    step = torch.where(usable, (powers.sum(dim=-1, keepdim=True) - 1.0) / torch.where(usable, descent, -1.0), 0.0)
    log_c = torch.where(near_bracket(log_c - step, log2_lo * _LN2, log_c), log_c - step, log_c)
    ratio = torch.exp(_log_ratio(log_a, log_c, q, inner))
    value = torch.where(inside, v, v * ratio)
    # (towards zero, so that the norm does not grow)
    return Dense(rounded_towards_zero(value, x.dtype), witness=v.abs().amax(dim=-1, keepdim=True))


LP_BALL = DatumOp("project_lp_ball", _into_lp_ball)
"""The exact Euclidean projection of each datum onto the Lp ball of radius ``epsilon`` (``1 < p < inf``)."""


def project_lp_ball(params: Params, p: float, epsilon: Union[float, torch.Tensor], param_ndim: Any = -1) -> Params:
    r"""The exact Euclidean projection of each datum onto the Lp ball of radius ``epsilon``, any real ``p > 1``.

    Not a rescaling (that is the projection only for ``p = 2``): the nearest
    point, from the KKT conditions :math:`y_i = \mathrm{sign}(x_i)\, g_i` with
    :math:`g_i + \lambda p\, g_i^{p-1} = |x_i|` and :math:`\|y\|_p = \epsilon`
    (a datum inside the ball is returned unchanged). The multiplier
    :math:`\lambda` is found by a search in log space with a fixed step count
    (each step tries 15 points at once) and each :math:`g_i` by Newton's method
    on :math:`\log(g_i / |x_i|)`, in float64 whatever the data's dtype: no host
    sync, so it compiles and vmaps. It costs ``O(D)`` exponentials times 15
    points times 4 or more Newton steps (more for p near 1 or far above 2)
    per search step (11 steps; 16 for float64).
    The KKT residual is below 1e-6 relative in float32. For ``p = 1``, ``2`` or
    ``inf`` use :func:`project_l1_ball`, :func:`project_l2_ball` or
    :func:`project_linf_ball` (faster).

    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). Lands
    in the ball within rounding (results are rounded towards zero); a datum
    holding a NaN or an inf maps to NaNs.

    Args:
        params: a tensor or a pytree of tensors.
        p: the norm's order, a finite real number > 1.
        epsilon: the radius, > 0: a number, or a tensor of one radius per datum
            (broadcastable to the batch shape, e.g. ``(N,)``); a datum whose
            radius is not a positive finite number comes out as NaNs.
        param_ndim: which trailing dims form one datum (see :func:`paramtx.to_batch`).

    Example:
        >>> import torch, paramtx as ptx
        >>> y = ptx.project_lp_ball(torch.tensor([3.0, 4.0]), p=3.0, epsilon=1.0, param_ndim=None)
        >>> y, round(float(y.pow(3).sum()), 5)
        (tensor([0.7247, 0.8524]), 1.0)
        >>> ptx.project_lp_ball(torch.tensor([3.0, 4.0]), p=2.0, epsilon=1.0, param_ndim=None)
        tensor([0.6000, 0.8000])
    """
    api = "project_lp_ball"
    p = _validate.check_real(api, "p", p, low=1.0, low_inclusive=False)
    return project_each_datum(api, LP_BALL, params, param_ndim, "epsilon", epsilon, p=p)
