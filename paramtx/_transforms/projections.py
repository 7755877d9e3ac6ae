"""Euclidean projections onto Lp balls and boxes, and ``projected`` to use them as a transform.

The projections are pure maps of a tensor, or of a pytree of tensors, to the
nearest point of the set (``None`` leaves pass through).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import EmptyState, GradientTransformation, Params, Updates, rebuildable
from paramtx._lift import lift
from paramtx._lift.numerics import accumulation_dtype
from paramtx._lift.ops import DatumOp, Dense, NormOp, Result, Scaled
from paramtx._transforms.elementwise import CLAMP


def _into_l2_ball(y: torch.Tensor, norm: torch.Tensor, scale: Union[torch.Tensor, float], *, epsilon: float) -> Result:
    # x * min(1, epsilon / ||x||) = y * min(1 / scale, epsilon / ||y||). A zero datum
    # gives epsilon / 0 = inf, which the clamp turns into 1 / scale: no guard needed.
    return Scaled(y, (epsilon / norm).clamp(max=1.0 / scale))


L2_BALL = NormOp("project_l2_ball", order=lambda *, epsilon: 2.0, finish=_into_l2_ball)
"""The projection of each datum onto the L2 ball of radius ``epsilon``."""


def _l1_working_dtype(dtype: torch.dtype) -> torch.dtype:
    # The soft threshold subtracts nearly equal numbers when the budget is small
    # against the data; a wider type than the data's keeps its sums of float32
    # magnitudes exact (ties, tiny budgets).
    return torch.float64 if dtype == torch.float32 else accumulation_dtype(dtype)


def _into_l1_ball(x: torch.Tensor, *, epsilon: float) -> Result:
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
    magnitude = x.abs().to(work)
    ordered = torch.sort(magnitude, dim=-1, descending=True).values
    partial_sums = ordered.cumsum(dim=-1)
    rank = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=work)
    support = ((partial_sums - rank * ordered) < epsilon).sum(dim=-1, keepdim=True).clamp(min=1)  # (0 for NaN data)
    kept_sum = partial_sums.gather(-1, support - 1)
    size = support.to(work)
    shrunk = ((size * magnitude - kept_sum + epsilon) / size).clamp(min=0)
    shrunk = shrunk * (epsilon / shrunk.sum(dim=-1, keepdim=True)).clamp(max=1.0)
    rounded = shrunk.to(x.dtype)
    rounded = torch.where(rounded.to(work) > shrunk, torch.nextafter(rounded, torch.zeros_like(rounded)), rounded)
    projected = torch.copysign(rounded, x)
    # the largest magnitude comes first: NaN sorts above inf, inf above every number
    return Dense(torch.where(partial_sums[..., -1:] <= epsilon, x, projected), witness=ordered[..., :1])


L1_BALL = DatumOp("project_l1_ball", _into_l1_ball)
"""The exact Euclidean projection of each datum onto the L1 ball of radius ``epsilon``."""


def project_l2_ball(params: Params, epsilon: float, param_ndim: Optional[int] = -1) -> Params:
    """Project each datum onto the L2 ball of radius ``epsilon``: ``x * min(1, epsilon / ||x||_2)``.

    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). The norm
    is scale-safe; a datum holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced.

    Example:
        >>> import torch, paramtx as ptx
        >>> x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> ptx.project_l2_ball(x, epsilon=1.0)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    api = "project_l2_ball"
    epsilon = _validate.check_real(api, "epsilon", epsilon, low=0.0, low_inclusive=False)
    param_ndim = _validate.check_param_ndim(api, param_ndim)
    return _tree.map_updates(api, lambda x: lift.map_data(api, L2_BALL, param_ndim, x, epsilon=epsilon), params)


def project_l1_ball(params: Params, epsilon: float, param_ndim: Optional[int] = -1) -> Params:
    """The exact Euclidean projection of each datum onto the L1 ball of radius ``epsilon``.

    Not a rescaling: elements are soft-thresholded by the ``theta`` that puts
    the datum on the sphere (Duchi et al. 2008, sort-based, ``O(D log D)``).
    Scope: per datum. Lands in the ball within rounding in every dtype, ties
    and tiny radii included; a datum holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_l1_ball(torch.tensor([0.9, -0.6, 0.1]), epsilon=1.0, param_ndim=None)
        tensor([ 0.6500, -0.3500,  0.0000])
        >>> ptx.project_l1_ball(torch.tensor([0.5, -0.2]), epsilon=1.0)   # inside: unchanged
        tensor([ 0.5000, -0.2000])
    """
    api = "project_l1_ball"
    epsilon = _validate.check_real(api, "epsilon", epsilon, low=0.0, low_inclusive=False)
    param_ndim = _validate.check_param_ndim(api, param_ndim)
    return _tree.map_updates(api, lambda x: lift.map_data(api, L1_BALL, param_ndim, x, epsilon=epsilon), params)


def project_linf_ball(params: Params, epsilon: float) -> Params:
    """Clamp every element into ``[-epsilon, epsilon]``: the projection onto the L-infinity ball.

    Scope: per element (so ``param_ndim`` does not apply). A NaN or infinite
    element maps to NaN.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_linf_ball(torch.tensor([2.0, -0.5, -3.0]), epsilon=1.0)
        tensor([ 1.0000, -0.5000, -1.0000])
    """
    api = "project_linf_ball"
    epsilon = _validate.check_real(api, "epsilon", epsilon, low=0.0, low_inclusive=False)
    return _tree.map_updates(api, lambda x: lift.map_data(api, CLAMP, None, x, low=-epsilon, high=epsilon), params)


def project_box(params: Params, lower: float, upper: float) -> Params:
    """Clamp every element into ``[lower, upper]``: the projection onto a box.

    Scope: per element. A NaN or infinite element maps to NaN.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_box(torch.tensor([-0.2, 0.5, 1.7]), lower=0.0, upper=1.0)
        tensor([0.0000, 0.5000, 1.0000])
    """
    api = "project_box"
    lower = _validate.check_real(api, "lower", lower)
    upper = _validate.check_real(api, "upper", upper)
    if lower > upper:
        raise ValueError(f"project_box: lower must satisfy lower <= upper, got lower={lower!r}, upper={upper!r}")
    return _tree.map_updates(api, lambda x: lift.map_data(api, CLAMP, None, x, low=lower, high=upper), params)


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
    projection([], **options)  # an empty tree: checks the options' values now

    def leaf_update(update: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        return projection(param + update, **options) - param

    def init_fn(params: Params) -> EmptyState:
        del params
        return EmptyState()

    def update_fn(updates: Updates, state: EmptyState, params: Optional[Params] = None):
        params = _tree.require_params("projected", params)
        return _tree.map_updates("projected", leaf_update, updates, params), state

    return GradientTransformation(init_fn, update_fn)
