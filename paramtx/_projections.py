"""Euclidean projections onto Lp balls and boxes, and ``projected`` to use them as a transform.

The projections are pure maps of a tensor, or of a pytree of tensors, to the
nearest point of the set (``None`` leaves pass through).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import torch

from paramtx import _param_ndim, _tree, _validate
from paramtx._base import GradientTransformation, Params, Updates, EmptyState
from paramtx._normalize import Dims, datum_norm


def l2_ball_scale(datum: torch.Tensor, *, epsilon: float, dims: Dims = -1) -> torch.Tensor:
    """``min(1, epsilon / ||datum||_2)``, kept as length-1 dims: the factor
    :func:`l2_ball_datum` scales by. (The torch.optim shims scale parameters by it in place.)"""
    # A zero datum gives epsilon / 0 = inf, which the clamp turns into 1: no guard needed.
    return (epsilon / datum_norm(datum, 2.0, dims)).clamp(max=1.0)


def l2_ball_datum(datum: torch.Tensor, *, epsilon: float, dims: Dims = -1) -> torch.Tensor:
    """Scale a datum (flattened, or spanning ``dims``) onto the L2 ball of radius ``epsilon``."""
    if dims == -1 and datum.shape[-1] == 1:
        # A one-element datum (e.g. each entry of a bias with param_ndim=-1): the ball is
        # [-epsilon, epsilon], and a clamp lands exactly on its edge in one pass.
        return datum.clamp(-epsilon, epsilon)
    return datum * l2_ball_scale(datum, epsilon=epsilon, dims=dims)


def l1_ball_datum(datum: torch.Tensor, *, epsilon: float) -> torch.Tensor:
    """The exact Euclidean projection of a flattened datum onto the L1 ball.

    Sort-based (Duchi et al., ICML 2008): with ``u`` the magnitudes sorted in
    decreasing order, ``rho`` the last index ``j`` (1-based) such that
    ``u_j > (u_1 + ... + u_j - epsilon) / j``, and
    ``theta = max(0, (u_1 + ... + u_rho - epsilon) / rho)``, the projection is
    the soft threshold ``sign(x) * max(|x| - theta, 0)``, computed as
    ``x - clamp(x, -theta, theta)`` (no ``-0.0``). A datum inside the ball gets
    ``theta = 0`` and is returned unchanged.
    """
    magnitude = datum.abs()
    ordered = torch.sort(magnitude, dim=-1, descending=True).values
    excess = ordered.cumsum(dim=-1) - epsilon
    rank = torch.arange(1, datum.shape[-1] + 1, device=datum.device, dtype=datum.dtype)
    # The condition holds on a prefix of the ranks; take the last rank where it holds
    # rather than count them, which rounding could break. Rank 1 holds in exact
    # arithmetic as epsilon > 0, but u_1 - epsilon rounds to u_1 when epsilon is
    # below u_1's float resolution: rank 1 is then the floor.
    support = torch.where(ordered * rank > excess, rank, 1).amax(dim=-1, keepdim=True)
    theta = (excess.gather(-1, support.long() - 1) / support).clamp(min=0)
    return datum - torch.clamp(datum, -theta, theta)


def project_l2_ball(params: Params, epsilon: float, param_ndim: Optional[int] = -1) -> Params:
    """Project each datum onto the L2 ball of radius ``epsilon``: ``x * min(1, epsilon / ||x||_2)``.

    Scope: per datum (``param_ndim`` rule in :mod:`paramtx._param_ndim`).
    Sharded tensors (DTensor, e.g. FSDP2): exact without gathering; the norm of
    a datum split across ranks is all-reduced (see :mod:`paramtx._sharded`).

    Example:
        >>> import torch, paramtx as ptx
        >>> x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> ptx.project_l2_ball(x, epsilon=1.0)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    epsilon = _validate.check_real("project_l2_ball", "epsilon", epsilon, low=0.0, low_inclusive=False)
    param_ndim = _validate.check_param_ndim("project_l2_ball", param_ndim)
    return _tree.map_updates(
        "project_l2_ball",
        lambda x: _param_ndim.map_data("project_l2_ball", l2_ball_datum, param_ndim, x, epsilon=epsilon),
        params,
    )


def project_l1_ball(params: Params, epsilon: float, param_ndim: Optional[int] = -1) -> Params:
    """The exact Euclidean projection of each datum onto the L1 ball of radius ``epsilon``.

    Not a rescaling: elements are soft-thresholded by the ``theta`` that puts
    the datum on the sphere (Duchi et al. 2008, sort-based, ``O(D log D)``).
    Scope: per datum.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded (see :mod:`paramtx._sharded`).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_l1_ball(torch.tensor([0.9, -0.6, 0.1]), epsilon=1.0, param_ndim=None)
        tensor([ 0.6500, -0.3500,  0.0000])
        >>> ptx.project_l1_ball(torch.tensor([0.5, -0.2]), epsilon=1.0)   # inside: unchanged
        tensor([ 0.5000, -0.2000])
    """
    epsilon = _validate.check_real("project_l1_ball", "epsilon", epsilon, low=0.0, low_inclusive=False)
    param_ndim = _validate.check_param_ndim("project_l1_ball", param_ndim)
    return _tree.map_updates(
        "project_l1_ball",
        lambda x: _param_ndim.map_data("project_l1_ball", l1_ball_datum, param_ndim, x, epsilon=epsilon),
        params,
    )


def project_linf_ball(params: Params, epsilon: float) -> Params:
    """Clamp every element into ``[-epsilon, epsilon]``: the projection onto the L-infinity ball.

    Scope: per element (so ``param_ndim`` does not apply).

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_linf_ball(torch.tensor([2.0, -0.5, -3.0]), epsilon=1.0)
        tensor([ 1.0000, -0.5000, -1.0000])
    """
    epsilon = _validate.check_real("project_linf_ball", "epsilon", epsilon, low=0.0, low_inclusive=False)
    return _tree.map_updates("project_linf_ball", lambda x: torch.clamp(x, -epsilon, epsilon), params)


def project_box(params: Params, lower: float, upper: float) -> Params:
    """Clamp every element into ``[lower, upper]``: the projection onto a box.

    Scope: per element.

    Example:
        >>> import torch, paramtx as ptx
        >>> ptx.project_box(torch.tensor([-0.2, 0.5, 1.7]), lower=0.0, upper=1.0)
        tensor([0.0000, 0.5000, 1.0000])
    """
    lower = _validate.check_real("project_box", "lower", lower)
    upper = _validate.check_real("project_box", "upper", upper)
    if lower > upper:
        raise ValueError(f"project_box: lower must satisfy lower <= upper, got lower={lower!r}, upper={upper!r}")
    return _tree.map_updates("project_box", lambda x: torch.clamp(x, lower, upper), params)


def projected(projection: Callable[..., Params], **options: Any) -> GradientTransformation:
    """Turn a projection into a transform whose update is ``proj(p + u) - p``.

    Put it last in a chain of steps (after :func:`sgd`, :func:`adam` or
    :func:`scale`) so that ``apply_updates`` lands the parameters in the set.
    Needs ``params``. ``options`` are passed to ``projection`` (e.g.
    ``epsilon``) and checked here, when the transform is built.

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
