"""Euclidean projections onto Lp balls and boxes, and ``projected`` to use them as a transform.

The projections are pure maps of a tensor, or of a pytree of tensors, to the
nearest point of the set (``None`` leaves pass through).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import EmptyState, GradientTransformation, Params, Updates, rebuildable
from paramtx._lift import lift
from paramtx._lift.numerics import accumulation_dtype, rounded_towards_zero
from paramtx._lift.settings import PerDatum, per_datum, per_element
from paramtx._lift.ops import DatumOp, Dense, NormOp, Result, Scaled
from paramtx._transforms.ball_box import project_ball_box
from paramtx._transforms.elementwise import CLAMP
from paramtx._transforms.inject import schedulable


def _into_l2_ball(
    y: torch.Tensor, norm: torch.Tensor, scale: Union[torch.Tensor, float], *, epsilon: Union[float, torch.Tensor]
) -> Result:
    # x * min(1, epsilon / ||x||) = y * min(1 / scale, epsilon / ||y||). A zero datum
    # gives epsilon / 0 = inf, which the clamp turns into 1 / scale: no guard needed.
    # (A number divided by a tensor is the reciprocal times the number: a per-datum
    # tensor epsilon takes that same path, in the norm's dtype, to give the same bits.)
    ratio = epsilon / norm if not isinstance(epsilon, torch.Tensor) else norm.reciprocal() * epsilon.to(norm.dtype)
    return Scaled(y, ratio.clamp(max=1.0 / scale))


L2_BALL = NormOp("project_l2_ball", order=lambda *, epsilon: 2.0, finish=_into_l2_ball)
"""The projection of each datum onto the L2 ball of radius ``epsilon``."""


def _l1_working_dtype(dtype: torch.dtype) -> torch.dtype:
    # The soft threshold subtracts nearly equal numbers when the budget is small
    # against the data; a wider type than the data's keeps its sums of float32
    # magnitudes exact (ties, tiny budgets).
    return torch.float64 if dtype == torch.float32 else accumulation_dtype(dtype)


def _into_l1_ball(x: torch.Tensor, *, epsilon: Union[float, torch.Tensor]) -> Result:
    """The exact Euclidean projection onto the L1 ball (Duchi et al., ICML 2008).

    With ``u`` the magnitudes sorted in decreasing order, the support size
    ``rho`` is the number of ranks ``j`` with ``sum_{i<=j} (u_i - u_j) < epsilon``
    (a prefix: the sum grows with ``j``), and every magnitude becomes
    ``max(0, |x| - theta)`` with ``theta = (u_1 + ... + u_rho - epsilon) / rho``,
    computed as ``(rho |x| - (u_1 + ... + u_rho) + epsilon) / rho``: exact for
    tied magnitudes and for ``rho = 1``, where ``|x| - theta`` would cancel.
    Rounding can leave the point a hair outside the ball: a rescale by
    ``min(1, epsilon / ||.||_1)`` puts it in, and the magnitudes are rounded to
    the data's dtype towards zero, so that the point stays in even where that
    dtype is coarse (half precision, subnormal numbers). A datum inside the ball
    is returned unchanged.
    """
    work = _l1_working_dtype(x.dtype)
    if isinstance(epsilon, torch.Tensor):  # per datum: (N, 1), or 0-d
        epsilon = epsilon.to(work)
    magnitude = x.abs().to(work)
    ordered = torch.sort(magnitude, dim=-1, descending=True).values
    partial_sums = ordered.cumsum(dim=-1)
    rank = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=work)
    support = ((partial_sums - rank * ordered) < epsilon).sum(dim=-1, keepdim=True).clamp(min=1)  # (0 for NaN data)
    kept_sum = partial_sums.gather(-1, support - 1)
    size = support.to(work)
    shrunk = ((size * magnitude - kept_sum + epsilon) / size).clamp(min=0)
    shrunk = shrunk * (shrunk.sum(dim=-1, keepdim=True).reciprocal() * epsilon).clamp(max=1.0)  # (= epsilon / sum)
    projected = torch.copysign(rounded_towards_zero(shrunk, x.dtype), x)
    # the largest magnitude comes first: NaN sorts above inf, inf above every number
    return Dense(torch.where(partial_sums[..., -1:] <= epsilon, x, projected), witness=ordered[..., :1])


L1_BALL = DatumOp("project_l1_ball", _into_l1_ball)
"""The exact Euclidean projection of each datum onto the L1 ball of radius ``epsilon``."""


def project_l2_ball(
    params: Params, epsilon: Union[float, torch.Tensor], param_ndim: Any = -1, *, lower: Any = None, upper: Any = None
) -> Params:
    """Project each datum onto the L2 ball of radius ``epsilon``: ``x * min(1, epsilon / ||x||_2)``.

    With ``lower`` or ``upper``, the exact projection onto the ball intersected
    with the box ``[lower, upper]`` instead: ``clamp(t x, lower, upper)`` with
    the largest ``t`` in ``(0, 1]`` that lands in the ball (the KKT solution,
    ``t = 1 / (1 + lambda)``; a bisection on ``t`` with a fixed step count and an
    exact last step, computed in float64: see :mod:`paramtx._transforms.ball_box`).

    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). The norm
    is scale-safe; a datum holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced.

    Args:
        params: a tensor or a pytree of tensors.
        epsilon: the radius, > 0: a number, or a tensor of one radius per datum
            (broadcastable to the batch shape, e.g. ``(N,)``; see "Settings as
            tensors" in :func:`paramtx.to_batch`). A datum whose radius is not
            a positive finite number comes out as NaNs.
        param_ndim: which trailing dims form one datum; per leaf, a pytree or a
            callable ``(path, shape)`` (see :func:`paramtx.to_batch`).
        lower, upper: optional bounds of a box, keyword only: numbers, or
            tensors broadcastable to each tensor of ``params`` (one bound per
            element, e.g. ``-x0`` and ``1 - x0`` to keep an image ``x0 + delta``
            in ``[0, 1]``); a missing one is infinite. With numbers only, an
            empty intersection (``lower > upper``, or a box that misses the
            ball) raises ``ValueError``; with tensors, whose values are not read
            on the host, the datum comes out as NaNs.

    Example:
        >>> import torch, paramtx as ptx
        >>> x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> ptx.project_l2_ball(x, epsilon=1.0)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
        >>> ptx.project_l2_ball(x, epsilon=torch.tensor([2.5, 0.25]))   # one radius per row
        tensor([[1.5000, 2.0000],
                [0.1500, 0.2000]])
        >>> # ball ∩ box (project-then-clamp would give [0.3, 0.8], not the nearest point)
        >>> ptx.project_l2_ball(torch.tensor([3.0, 4.0]), 1.0, param_ndim=None, upper=torch.tensor([0.3, 5.0]))
        tensor([0.3000, 0.9539])
    """
    if lower is not None or upper is not None:
        return project_ball_box("project_l2_ball", 2.0, params, epsilon, param_ndim, lower, upper)
    return project_each_datum("project_l2_ball", L2_BALL, params, param_ndim, "epsilon", epsilon)


def project_each_datum(
    api: str, op: Any, params: Params, param_ndim: Any, name: str, value: Any, **fixed: Any
) -> Params:
    """The front end of a projection whose set has one positive size per datum, ``name``
    (a radius, a sum): checks ``value`` and ``param_ndim``, then ``op`` on each datum.
    ``fixed``: options the caller has checked (a norm's order)."""
    value = _validate.check_setting(api, name, value, _validate.POSITIVE)
    param_ndim = _validate.check_param_ndim_spec(api, param_ndim)
    size = per_datum(name, value, _validate.POSITIVE)  # (invalid tensor values: NaN)

    def leaf(x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
        return lift.map_data(api, op, param_ndim, x, **fixed, **{name: size})

    return _tree.map_updates(api, leaf, params, param_ndim=param_ndim)


def project_l1_ball(
    params: Params, epsilon: Union[float, torch.Tensor], param_ndim: Any = -1, *, lower: Any = None, upper: Any = None
) -> Params:
    """The exact Euclidean projection of each datum onto the L1 ball of radius ``epsilon``.

    Not a rescaling: elements are soft-thresholded by the ``theta`` that puts
    the datum on the sphere (Duchi et al. 2008, sort-based, ``O(D log D)``).
    Scope: per datum. Lands in the ball within rounding in every dtype, ties
    and tiny radii included; a datum holding a NaN or an inf maps to NaNs.
    ``epsilon`` and ``param_ndim`` as in :func:`project_l2_ball` (a tensor
    ``epsilon`` gives one radius per datum).
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded.

    With ``lower`` or ``upper`` (keyword only, as in :func:`project_l2_ball`),
    the exact projection onto the ball intersected with the box:
    ``clamp(soft(x, theta), lower, upper)``, soft-thresholded then clamped, with
    the smallest ``theta >= 0`` that lands in the ball, found by a bisection on
    ``theta`` with a fixed step count and an exact last step (``O(D)`` per
    step, no sort; see :mod:`paramtx._transforms.ball_box`).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_l1_ball(torch.tensor([0.9, -0.6, 0.1]), epsilon=1.0, param_ndim=None)
        tensor([ 0.6500, -0.3500,  0.0000])
        >>> ptx.project_l1_ball(torch.tensor([0.5, -0.2]), epsilon=1.0)   # inside: unchanged
        tensor([ 0.5000, -0.2000])
        >>> ptx.project_l1_ball(torch.tensor([0.75, -0.5, 0.125]), epsilon=1.0, param_ndim=None, lower=-0.25)
        tensor([ 0.6875, -0.2500,  0.0625])
    """
    if lower is not None or upper is not None:
        return project_ball_box("project_l1_ball", 1.0, params, epsilon, param_ndim, lower, upper)
    return project_each_datum("project_l1_ball", L1_BALL, params, param_ndim, "epsilon", epsilon)


def linf_bounds(epsilon: Any) -> tuple[Any, Any]:
    """The options ``(low, high)`` of ``CLAMP`` for the L-infinity ball of radius ``epsilon``
    (a number, or a tensor of one per datum: NaN where it is not a positive finite number)."""
    high = per_datum("epsilon", epsilon, _validate.POSITIVE)
    return (PerDatum(-high.value, "epsilon") if isinstance(high, PerDatum) else -high), high


def project_linf_ball(
    params: Params, epsilon: Union[float, torch.Tensor], param_ndim: Any = -1, *, lower: Any = None, upper: Any = None
) -> Params:
    """Clamp every element into ``[-epsilon, epsilon]``: the projection onto the L-infinity ball.

    Scope: per element. A NaN or infinite element maps to NaN. ``param_ndim``
    matters only for a tensor ``epsilon``, one radius per datum (broadcastable
    to the batch shape, as in :func:`project_l2_ball`).

    With ``lower`` or ``upper`` (keyword only, as in :func:`project_l2_ball`),
    the projection onto the ball intersected with the box, itself a box:
    a clamp into ``[max(lower, -epsilon), min(upper, epsilon)]``.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_linf_ball(torch.tensor([2.0, -0.5, -3.0]), epsilon=1.0)
        tensor([ 1.0000, -0.5000, -1.0000])
        >>> ptx.project_linf_ball(torch.tensor([[2.0, -3.0], [2.0, -3.0]]), epsilon=torch.tensor([1.0, 2.5]))
        tensor([[ 1.0000, -1.0000],
                [ 2.0000, -2.5000]])
        >>> ptx.project_linf_ball(torch.tensor([2.0, -0.5, -3.0]), epsilon=1.0, lower=-0.25)
        tensor([ 1.0000, -0.2500, -0.2500])
    """
    api = "project_linf_ball"
    if lower is not None or upper is not None:
        return project_ball_box(api, math.inf, params, epsilon, param_ndim, lower, upper)
    epsilon = _validate.check_setting(api, "epsilon", epsilon, _validate.POSITIVE)
    param_ndim = _validate.check_param_ndim_spec(api, param_ndim)
    if not isinstance(epsilon, torch.Tensor):  # per element: param_ndim plays no part
        return _tree.map_updates(api, lambda x: lift.map_data(api, CLAMP, None, x, low=-epsilon, high=epsilon), params)
    low, high = linf_bounds(epsilon)

    def leaf(x: torch.Tensor, param_ndim: Optional[int]) -> torch.Tensor:
        return lift.map_data(api, CLAMP, param_ndim, x, low=low, high=high)

    return _tree.map_updates(api, leaf, params, param_ndim=param_ndim)


def project_box(
    params: Params, lower: Union[float, torch.Tensor], upper: Union[float, torch.Tensor]
) -> Params:
    """Clamp every element into ``[lower, upper]``: the projection onto a box.

    Scope: per element. A NaN or infinite element maps to NaN. ``lower`` and
    ``upper`` are numbers or tensors broadcastable to each tensor of ``params``
    (torch's broadcasting: one bound per element, e.g. ``-x0`` and ``1 - x0``
    to keep an image ``x0 + delta`` in ``[0, 1]``). Tensor bounds are not read
    on the host: an element whose ``lower > upper`` (or whose bound is NaN)
    comes out as NaN.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_box(torch.tensor([-0.2, 0.5, 1.7]), lower=0.0, upper=1.0)
        tensor([0.0000, 0.5000, 1.0000])
        >>> x0 = torch.tensor([0.1, 0.9, 0.5])
        >>> ptx.project_box(torch.tensor([-0.2, 0.5, 0.7]), lower=-x0, upper=1 - x0)
        tensor([-0.1000,  0.1000,  0.5000])
    """
    api = "project_box"
    lower = _validate.check_setting(api, "lower", lower)
    upper = _validate.check_setting(api, "upper", upper)
    if not isinstance(lower, torch.Tensor) and not isinstance(upper, torch.Tensor):
        if lower > upper:
            raise ValueError(f"project_box: lower must satisfy lower <= upper, got lower={lower!r}, upper={upper!r}")
    else:  # (an empty box: NaN, as a host check would need a sync)
        lower, upper = _validate.nan_where_empty(lower, upper)
    low, high = per_element("lower", lower), per_element("upper", upper)
    return _tree.map_updates(api, lambda x: lift.map_data(api, CLAMP, None, x, low=low, high=high), params)


@schedulable("epsilon", "lower", "upper")
@rebuildable
def projected(projection: Callable[..., Params], **options: Any) -> GradientTransformation:
    """Turn a projection into a transform whose update is ``proj(p + u) - p``.

    Put it last in a chain of steps (after :func:`sgd`, :func:`adam` or
    :func:`scale`) so that ``apply_updates`` lands the parameters in the set.
    Needs ``params``. ``options`` are passed to ``projection`` (e.g.
    ``epsilon``) and checked here, when the transform is built.

    Scope: that of ``projection``.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.chain(ptx.sgd(lr=1.0), ptx.projected(ptx.project_l2_ball, epsilon=1.0, param_ndim=None))
        >>> x = torch.tensor([0.5, 0.0])
        >>> updates, _ = tx.update(torch.tensor([-1.5, 0.0]), tx.init(x), x)
        >>> ptx.apply_updates(x, updates)
        tensor([1., 0.])
    """
    if not callable(projection):
        raise TypeError(f"projected: projection must be callable, got {projection!r}")
    try:
        inspect.signature(projection).bind(None, **options)
    except TypeError as error:
        raise TypeError(f"projected: options {sorted(options)} do not fit {getattr(projection, '__name__', projection)}: {error}") from None
    per_leaf = "param_ndim" in options and not (options["param_ndim"] is None or isinstance(options["param_ndim"], int))
    if per_leaf:  # (a pytree or a callable, which an empty tree cannot fit: checked as such)
        _validate.check_param_ndim_spec(getattr(projection, "__name__", "projected"), options["param_ndim"])
    projection([], **({**options, "param_ndim": -1} if per_leaf else options))  # an empty tree: checks the values now

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def leaf_update(update: torch.Tensor, param: torch.Tensor, **param_ndim: Any) -> torch.Tensor:
        return projection(param + update, **{**options, **param_ndim}) - param

    def update_fn(updates: Updates, state: EmptyState, params: Optional[Params] = None):
        params = _tree.require_params("projected", params)
        if per_leaf:  # (projected calls the projection leaf by leaf: each gets its own param_ndim)
            new = _tree.map_updates("projected", leaf_update, updates, params, param_ndim=options["param_ndim"])
        else:
            new = _tree.map_updates("projected", leaf_update, updates, params)
        return new, state

    return GradientTransformation(init_fn, update_fn)
