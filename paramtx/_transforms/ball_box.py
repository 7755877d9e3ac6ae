"""Exact Euclidean projections onto an Lp ball intersected with a box (p = 1, 2, inf).

For a datum ``x``, a radius ``epsilon`` and per-element bounds ``lower <= upper``,
the projection is ``argmin ||y - x||_2`` over ``||y||_p <= epsilon`` and
``lower <= y <= upper``. Neither "project onto the ball, then clamp" nor the
reverse gives it in general; both constraints enter one KKT system, and its
multiplier is found by a one-dimensional search:

* L2: ``y(t) = clamp(t x, lower, upper)`` with ``t = 1 / (1 + lambda)`` in
  ``(0, 1]``. ``||y(t)||_2`` grows with ``t``; the answer is ``t = 1`` (the
  clamp) when that lands in the ball, else the ``t`` where ``||y(t)||_2 = epsilon``.
* L1: ``y(theta) = clamp(soft(x, theta), lower, upper)`` (the soft threshold
  ``sign(x) max(|x| - theta, 0)``), ``theta >= 0``; ``||y(theta)||_1`` falls as
  ``theta`` grows; the answer is ``theta = 0`` when the clamp lands in the ball.
* L-infinity: the intersection is itself a box, ``[max(lower, -epsilon),
  min(upper, epsilon)]``: a clamp.

Both searches are bisections with a fixed number of steps (no host sync, no
data-dependent control flow: they compile and vmap), followed by one exact
step: between two breakpoints (where an element meets a bound or zero) the
norm is a closed form of the multiplier (``A + B t^2``, ``C - K theta``), solved
on the piece the bracket ends in. It is exact whenever the final bracket holds
no breakpoint, and within the bracket's width otherwise; a last correction, at the
scale of the result, takes off the L1 norm's rounding excess (``|x| - theta``
rounds at the scale of ``|x|``, which far outside a small ball would leave the
result a few ulps of ``max|x|`` outside it). Arithmetic is float64
for every data dtype (sums over a datum of float32 magnitudes stay exact
enough, and squares of float32 numbers neither overflow nor underflow), but
for the L1 search on data of float32 or less, which runs in float32 (half the
memory traffic) and whose exact step is checked in float64.

The intersection is empty when the box's point nearest the origin,
``clamp(0, lower, upper)``, lies outside the ball (or some ``lower > upper``).
With numbers for ``epsilon`` and the bounds, that is known from the shapes and
the front ends raise ``ValueError``; with tensors it would take a host sync,
so, as for every setting given as a tensor, the datum comes out as NaNs.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import Params
from paramtx._lift import lift
from paramtx._lift.numerics import rounded_towards_zero
from paramtx._lift.ops import DatumOp, Dense, Mapped, Result
from paramtx._lift.param_ndim import datum_size
from paramtx._lift.settings import operand, per_datum, per_element

Setting = Union[float, torch.Tensor]

_WORK = torch.float64
_TINY = torch.finfo(_WORK).tiny

# Bisection steps. L1, on theta in [0, max|x|]: after k steps the bracket is
# max|x| 2**-k wide. For data of float32 or less the search runs in float32
# (half the memory traffic of float64): 26 steps reach its resolution at max|x|
# (2**-24, with a quarter-ulp to spare); the exact last step, in float64, is
# checked against the norm it reaches, so a bracket that rounding put a hair off
# still gives the exact theta. float64 data: 56 steps, an eighth of an ulp below
# float64's resolution (2**-53).
_L1_STEPS = {torch.float64: 56}
_L1_STEPS_DEFAULT = 26
# L2, on t in [t_lo, 1] with t_lo >= 2**-1022: while hi > 2 lo the midpoint is
# geometric, which halves log2(hi / lo) <= 1022, so 10 steps bring every datum
# to hi <= 2 lo; each further (arithmetic) step halves the relative width
# (hi - lo) / lo <= 1: 30 more steps give 2**-30 (float32 and half data, whose
# rounding is 2**-24), 53 more give float64's resolution.
_L2_STEPS = {torch.float64: 10 + 53}
_L2_STEPS_DEFAULT = 10 + 30


def _on_grid(bound: Setting, x: torch.Tensor, dtype: torch.dtype = _WORK) -> torch.Tensor:
    """A bound rounded to the data's dtype, then widened to ``dtype`` (exactly).

    Bounds the data's dtype holds exactly let the final rounding keep the
    result in the box (see :func:`paramtx._lift.numerics.rounded_towards_zero`).
    """
    if isinstance(bound, torch.Tensor):
        return bound.to(x.dtype).to(dtype)
    return torch.full((), bound, dtype=x.dtype, device=x.device).to(dtype)


def near_bracket(value: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Whether an exact last step ``value`` lies within the final bracket ``[low, high]``,
    widened by its width on either side.

    The closed form is exact on the piece it was derived on; rounding may put
    it a hair outside the bracket, where it is still right (and clamping it to
    the bracket's end would cut its gradient, the implicit derivative, to 0).
    Farther out (a breakpoint lies in the bracket, or NaN), the caller falls
    back to the bracket's feasible end.
    """
    # (a bracket shrunk to adjacent floats has width 0: allow rounding of the closed form too)
    width = (high - low) + _ROUNDING * torch.maximum(high.abs(), low.abs())
    return (value >= low - width) & (value <= high + width)


_ROUNDING = 64 * torch.finfo(_WORK).eps


def _invalid_box(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Per datum, whether some ``lower > upper`` (or a bound is NaN)."""
    bad = ~(low <= high)
    return bad.any(dim=-1, keepdim=True) if bad.dim() > 0 else bad


def _finish(value: torch.Tensor, empty: torch.Tensor, x: torch.Tensor, largest: torch.Tensor) -> Result:
    """The result in the data's dtype, NaN where the set is empty; ``largest``: each datum's
    largest magnitude, where every NaN or inf of the datum shows."""
    value = torch.where(empty, torch.nan, value)
    return Dense(rounded_towards_zero(value, x.dtype), witness=largest)


def _into_l2_ball_box(x: torch.Tensor, *, epsilon: Setting, lower: Setting, upper: Setting) -> Result:
    """The projection onto ``{||y||_2 <= epsilon} ∩ [lower, upper]`` of rows ``(..., D)``."""
    steps = _L2_STEPS.get(x.dtype, _L2_STEPS_DEFAULT)
    radius = operand(epsilon, _WORK)
    low, high = _on_grid(lower, x), _on_grid(upper, x)
    v = x.to(_WORK)

    searched = v.detach()  # (the search only brackets t; the gradient comes from the exact step)

    def length(t: Any) -> torch.Tensor:
        return torch.linalg.vector_norm(torch.clamp(searched * t, low, high), dim=-1, keepdim=True)

    least = length(0.0)  # the box's point nearest the origin
    inside = length(1.0) <= radius
    # ||y(t) - y(0)|| <= t ||x|| (clamp is 1-Lipschitz), so y(t_lo) is in the ball
    t_lo = ((radius - least) / torch.linalg.vector_norm(searched, dim=-1, keepdim=True)).clamp(min=_TINY, max=1.0)
    t_hi = torch.ones_like(t_lo)
    for _ in range(steps):
        mid = torch.where(t_hi > 2 * t_lo, torch.sqrt(t_lo * t_hi), (t_lo + t_hi) / 2)
        fits = length(mid) <= radius
        t_lo, t_hi = torch.where(fits, mid, t_lo), torch.where(fits, t_hi, mid)
    # On the piece holding the bracket, ||y(t)||^2 = A + B t^2 (A: the clamped elements)
    scaled = v * ((t_lo + t_hi) / 2)
    free = (scaled > low) & (scaled < high)
    clamped = torch.where(free, 0.0, torch.clamp(scaled, low, high)).square().sum(dim=-1, keepdim=True)
    slope = torch.where(free, v, 0.0).square().sum(dim=-1, keepdim=True)
    # (kept finite where the piece has no solution, so that no NaN reaches the gradient)
    room, solvable = radius * radius - clamped, slope > 0
    t = torch.sqrt(room.clamp(min=0.0) / torch.where(solvable, slope, 1.0))
    t = torch.where(solvable & (room >= 0) & near_bracket(t, t_lo, t_hi), t, t_lo)
    t = torch.where(inside, 1.0, t)
    empty = (least > radius) | _invalid_box(low, high)
    return _finish(torch.clamp(v * t, low, high), empty, x, v.abs().amax(dim=-1, keepdim=True))


def _into_l1_ball_box(x: torch.Tensor, *, epsilon: Setting, lower: Setting, upper: Setting) -> Result:
    """The projection onto ``{||y||_1 <= epsilon} ∩ [lower, upper]`` of rows ``(..., D)``."""
    steps = _L1_STEPS.get(x.dtype, _L1_STEPS_DEFAULT)
    radius = operand(epsilon, _WORK)
    # The search only brackets theta (the gradient comes from the exact step), in float32
    # for data of float32 or less: magnitudes and bounds (on the data's grid) are exact there.
    search = torch.float64 if x.dtype == torch.float64 else torch.float32
    low, high = _on_grid(lower, x, search), _on_grid(upper, x, search)
    data = x.detach().to(search)
    # The sign of x as a number, +-1 (-0.0 counts as negative, throughout): multiplying by it
    # is exact, and cheaper than selecting with a mask (torch.where over a whole tensor).
    sign = torch.copysign(torch.ones_like(data), data)
    # w = sign(x) y, the result along the sign of x, lies in the box [w_low, w_high], flipped
    # where x < 0; as a function of theta it is clamp(|x| - theta, floor, w_high), floor = 0
    # where that box holds 0
    flipped_low, flipped_high = sign * low, sign * high
    w_low, w_high = torch.minimum(flipped_low, flipped_high), torch.maximum(flipped_low, flipped_high)
    floor = torch.minimum(w_low.clamp(min=0.0), w_high)
    # |w| lies in [|floor|, |w_high|] (where w_high < 0, w is the constant w_high = floor)
    mass_low, mass_high = floor.abs(), w_high.abs()
    searched = data.abs()

    def mass(theta: Any) -> torch.Tensor:
        return torch.clamp(searched - theta, mass_low, mass_high).sum(dim=-1, keepdim=True)

    least = mass_low.sum(dim=-1, keepdim=True, dtype=_WORK)  # the box's point nearest the origin
    inside = torch.clamp(searched, mass_low, mass_high).sum(dim=-1, keepdim=True, dtype=_WORK) <= radius
    top = searched.amax(dim=-1, keepdim=True)
    theta_lo, theta_hi = torch.zeros_like(top), top
    for _ in range(steps):
        mid = (theta_lo + theta_hi) / 2
        fits = mass(mid) <= radius
        theta_lo, theta_hi = torch.where(fits, theta_lo, mid), torch.where(fits, mid, theta_hi)
    # On the piece holding the bracket, ||y(theta)||_1 = S - K (theta - mid) (K: the free
    # elements, S: its value at the bracket's midpoint): solved by one exact step in float64;
    # kept where the norm at the solution is epsilon (the piece was right), else the
    # bracket's end that fits
    magnitude, cap_low, cap_high = x.to(_WORK).abs(), mass_low.to(_WORK), mass_high.to(_WORK)
    theta_lo, theta_hi = theta_lo.to(_WORK), theta_hi.to(_WORK)
    mid = (theta_lo + theta_hi) / 2
    shifted = magnitude - mid
    free = (shifted > cap_low) & (shifted < cap_high)
    count = free.sum(dim=-1, keepdim=True)
    at_mid = torch.clamp(shifted, cap_low, cap_high).sum(dim=-1, keepdim=True)
    theta = mid + (at_mid - radius) / count.clamp(min=1)  # (finite where no element is free: no NaN gradient)
    reached = torch.clamp(magnitude.detach() - theta.detach(), cap_low, cap_high).sum(dim=-1, keepdim=True)
    exact = (count > 0) & ((reached - radius).abs() <= _ROUNDING * (radius + at_mid.detach().abs() + count * mid))
    # |x| - theta is rounded at the scale of |x|: far outside a small ball, the norm it
    # reaches overshoots the radius by up to ~ulp(max|x|). Its excess, known from the check
    # above, is taken off the free elements at the scale of the result (|x| - theta first:
    # elements at a bound stay there). In exact arithmetic it is 0: no gradient flows through it.
    excess = torch.where(exact & ~inside, (reached - radius).clamp(min=0.0) / count.clamp(min=1), 0.0)
    theta = torch.where(exact, theta, theta_hi)
    theta = torch.where(inside, 0.0, theta)
    w = torch.clamp((magnitude - theta) - excess, floor.to(_WORK), w_high.to(_WORK))
    empty = (least > radius) | _invalid_box(low, high)
    return _finish(w * sign.to(_WORK), empty, x, magnitude.amax(dim=-1, keepdim=True))


def _into_linf_ball_box(x: torch.Tensor, *, epsilon: Setting, lower: Setting, upper: Setting) -> Result:
    # The intersection of two boxes; where it is empty the element is NaN.
    low = torch.maximum(_as_tensor(lower, x), -_as_tensor(epsilon, x))
    high = torch.minimum(_as_tensor(upper, x), _as_tensor(epsilon, x))
    return Mapped(torch.clamp, (x, torch.where(low <= high, low, torch.nan), high))


def _as_tensor(value: Setting, x: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(x.dtype)
    return torch.full((), value, dtype=x.dtype, device=x.device)


L2_BALL_BOX = DatumOp("project_l2_ball_box", _into_l2_ball_box)
"""The exact projection of each datum onto the L2 ball of radius ``epsilon`` intersected with ``[lower, upper]``."""

L1_BALL_BOX = DatumOp("project_l1_ball_box", _into_l1_ball_box)
"""The exact projection of each datum onto the L1 ball of radius ``epsilon`` intersected with ``[lower, upper]``."""

LINF_BALL_BOX = DatumOp("project_linf_ball_box", _into_linf_ball_box, elementwise=True)
"""Each element clamped into ``[max(lower, -epsilon), min(upper, epsilon)]`` (NaN where that is empty)."""

_OPS = {1.0: L1_BALL_BOX, 2.0: L2_BALL_BOX, math.inf: LINF_BALL_BOX}


def _nearest_norm(p: float, lower: float, upper: float, size: int) -> float:
    """``||clamp(0, lower, upper)||_p`` for a datum of ``size`` elements and number bounds."""
    gap = max(lower, 0.0) + max(-upper, 0.0)  # distance from 0 to [lower, upper] per element
    if gap == 0.0 or p == math.inf:
        return gap
    return gap * size ** (1.0 / p)


def project_ball_box(
    api: str, p: float, params: Params, epsilon: Any, param_ndim: Any, lower: Any, upper: Any
) -> Params:
    """The front end of ``project_l{1,2,inf}_ball(..., lower=, upper=)``: checks, then the lift.

    ``epsilon`` and ``param_ndim`` are those the caller was given (checked here).
    A missing bound is infinite. Numbers are checked now, empty intersections
    included (``ValueError``); tensors are checked for kind and shape only (see
    the module doc).
    """
    epsilon = _validate.check_setting(api, "epsilon", epsilon, _validate.POSITIVE)
    param_ndim = _validate.check_param_ndim_spec(api, param_ndim)
    lower = -math.inf if lower is None else _validate.check_setting(api, "lower", lower)
    upper = math.inf if upper is None else _validate.check_setting(api, "upper", upper)
    numbers = not any(isinstance(v, torch.Tensor) for v in (epsilon, lower, upper))
    if not isinstance(lower, torch.Tensor) and not isinstance(upper, torch.Tensor) and lower > upper:
        raise ValueError(f"{api}: lower must satisfy lower <= upper, got lower={lower!r}, upper={upper!r}")
    radius = per_datum("epsilon", epsilon, _validate.POSITIVE)
    low, high = per_element("lower", _finite(lower)), per_element("upper", _finite(upper))
    op = _OPS[p]

    def leaf(x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
        if numbers:
            size = 1 if p == math.inf else datum_size(api, x.shape, param_ndim)
            nearest = _nearest_norm(p, lower, upper, size)
            if nearest > epsilon and x.numel() > 0:
                raise ValueError(
                    f"{api}: the ball of radius epsilon={epsilon!r} and the box [lower, upper] = "
                    f"[{lower!r}, {upper!r}] do not intersect for data of {size} elements "
                    f"(the box's point nearest 0 has norm {nearest:.6g})"
                )
        return lift.map_data(api, op, param_ndim, x, epsilon=radius, lower=low, upper=high)

    return _tree.map_updates(api, leaf, params, param_ndim=param_ndim)


def _finite(bound: Setting) -> Setting:
    # An infinite element of a tensor bound means "unbounded" there: the largest
    # finite number of its dtype acts the same on finite data, and is not taken
    # for an invalid setting (NaN stays NaN: the datum comes out as NaNs).
    if isinstance(bound, torch.Tensor) and bound.is_floating_point():
        big = torch.finfo(bound.dtype).max
        return torch.nan_to_num(bound, nan=math.nan, posinf=big, neginf=-big)
    return bound
