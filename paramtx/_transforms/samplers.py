"""Uniform samplers of Lp balls: ``sample_l1_ball``, ``sample_l2_ball``, ``sample_linf_ball``.

Each draws, per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`), a
point uniformly distributed in the ball of radius ``epsilon``, as a new tensor
of the shape, dtype and device of ``like`` (whose values are not read).
Randomness comes from the caller's ``generator`` (the default generator of
``like``'s device when ``None``). Half-precision samples are drawn in float32
and rounded once at the end.
"""

from __future__ import annotations

import numbers
from typing import Optional, Union

import torch

from paramtx._core import validate as _validate
from paramtx._lift.numerics import accumulation_dtype
from paramtx._lift.param_ndim import rows_shape

Radius = Union[float, torch.Tensor]


def _check_like(api: str, like: object) -> torch.Tensor:
    if not isinstance(like, torch.Tensor):
        raise TypeError(f"{api}: like must be a torch.Tensor, got {like!r:.100} (type {type(like).__name__})")
    if not like.is_floating_point():
        raise TypeError(f"{api}: like must have a floating-point dtype, got {like.dtype}")
    return like


def _check_generator(api: str, generator: object) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{api}: generator must be a torch.Generator or None, got {generator!r:.100}")
    return generator


def radius_per_datum(api: str, epsilon: object, n: int) -> Radius:
    """``epsilon`` as a positive float, or as an ``(N, 1)`` tensor of per-datum radii.

    A tensor must broadcast to the ``N`` data (shape ``()``, ``(1,)`` or ``(N,)``,
    or ``(N, 1)``). Its values are not read on the host (that would need a sync):
    a datum whose radius is not a positive finite number comes out as NaNs.
    """
    if isinstance(epsilon, torch.Tensor):
        if epsilon.is_complex() or epsilon.dtype == torch.bool:
            raise TypeError(f"{api}: epsilon must be a real tensor, got dtype {epsilon.dtype}")
        if epsilon.numel() not in (1, n) or epsilon.dim() > 2 or (epsilon.dim() == 2 and epsilon.shape[1] != 1):
            raise ValueError(
                f"{api}: epsilon must be a number or a tensor broadcastable to the {n} data "
                f"(shape (), (1,), ({n},) or ({n}, 1)), got shape {tuple(epsilon.shape)}"
            )
        return _validate.nan_where_invalid(epsilon, _validate.POSITIVE).reshape(-1, 1)
    if isinstance(epsilon, numbers.Real) and not isinstance(epsilon, bool):
        return _validate.check_real(api, "epsilon", epsilon, low=0.0, low_inclusive=False)
    raise TypeError(f"{api}: epsilon must be a real number or a tensor, got {epsilon!r} (type {type(epsilon).__name__})")


def _setup(api: str, like: object, epsilon: object, param_ndim: object, generator: object):
    like = _check_like(api, like)
    param_ndim = _validate.check_param_ndim(api, param_ndim)
    generator = _check_generator(api, generator)
    n, d = rows_shape(api, like.shape, param_ndim)
    radius = radius_per_datum(api, epsilon, n)
    work = accumulation_dtype(like.dtype)
    device = like.device if generator is None else generator.device
    if isinstance(radius, torch.Tensor):
        radius = radius.to(device=device, dtype=work)
    return like, (n, d), radius, dict(dtype=work, device=device), generator


def _finish(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return rows.reshape(like.shape).to(device=like.device, dtype=like.dtype)


def _radial_law(n: int, d: int, generator: Optional[torch.Generator], **kwargs) -> torch.Tensor:
    """``U ** (1 / D)`` per datum, ``(N, 1)``: the law of ``||x|| / epsilon`` for ``x``
    uniform in a D-dimensional ball of any norm (the volume below radius ``r``
    grows as ``r ** D``)."""
    return torch.rand((n, 1), generator=generator, **kwargs) ** (1.0 / d)


def sample_l2_ball(
    like: torch.Tensor, epsilon: Radius, param_ndim: Optional[int] = -1, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    r"""Draw each datum uniformly from the L2 ball of radius ``epsilon``.

    Maths: a standard normal vector ``z`` has a uniformly distributed direction;
    ``x = epsilon * U^{1/D} z / ||z||_2`` with ``U`` uniform on ``[0, 1)`` has the
    radius law ``P(||x|| <= r epsilon) = r^D`` of the uniform distribution.

    Scope: per datum. ``epsilon`` is a positive number or a tensor of per-datum
    radii (shape ``(N,)`` for ``N`` data). Samples lie in the ball within
    rounding of ``like``'s dtype.

    Args:
        like: a tensor whose shape, dtype and device the sample takes (its values are unused).
        epsilon: the radius.
        param_ndim: what one datum is (:func:`paramtx.to_batch`).
        generator: the source of randomness (``None``: the default generator).

    Example:
        >>> import torch, paramtx as ptx
        >>> x = ptx.sample_l2_ball(torch.empty(4, 3, 8), epsilon=0.5, generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool((x.flatten(1).norm(dim=1) <= 0.5).all())
        (torch.Size([4, 3, 8]), True)
    """
    like, (n, d), radius, kwargs, generator = _setup("sample_l2_ball", like, epsilon, param_ndim, generator)
    if n * d == 0:
        return torch.zeros_like(like)
    direction = torch.randn((n, d), generator=generator, **kwargs)
    length = torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    # (a zero normal vector has probability 0; the clamp only keeps it from being NaN)
    scale = _radial_law(n, d, generator, **kwargs) * radius / length.clamp(min=torch.finfo(length.dtype).tiny)
    return _finish(direction * scale, like)


def sample_l1_ball(
    like: torch.Tensor, epsilon: Radius, param_ndim: Optional[int] = -1, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    r"""Draw each datum uniformly from the L1 ball of radius ``epsilon``.

    Maths: with ``E_0, ..., E_D`` independent standard exponentials,
    ``(E_1, ..., E_D) / (E_0 + ... + E_D)`` is uniform on ``{z >= 0, sum z <= 1}``
    (the first ``D`` coordinates of a uniform point of the ``D``-simplex), and
    independent uniform signs spread it over the ``2^D`` orthants: the radius law
    is ``P(||x||_1 <= r epsilon) = r^D``.

    Scope: per datum, ``O(D)`` (no sort). ``epsilon`` is a positive number or a
    tensor of per-datum radii (shape ``(N,)``).

    Args:
        like: a tensor whose shape, dtype and device the sample takes (its values are unused).
        epsilon: the radius.
        param_ndim: what one datum is (:func:`paramtx.to_batch`).
        generator: the source of randomness (``None``: the default generator).

    Example:
        >>> import torch, paramtx as ptx
        >>> x = ptx.sample_l1_ball(torch.empty(4, 10), epsilon=2.0, generator=torch.Generator().manual_seed(0))
        >>> bool((x.abs().sum(dim=1) <= 2.0).all())
        True
    """
    like, (n, d), radius, kwargs, generator = _setup("sample_l1_ball", like, epsilon, param_ndim, generator)
    if n * d == 0:
        return torch.zeros_like(like)
    magnitude = torch.empty((n, d + 1), **kwargs).exponential_(generator=generator)
    # E_0 (the slack to the sphere) enters the sum only
    total = magnitude.sum(dim=1, keepdim=True)
    sign = torch.empty((n, d), **kwargs).bernoulli_(0.5, generator=generator) * 2 - 1
    return _finish(sign * magnitude[:, 1:] * (radius / total), like)


def sample_linf_ball(
    like: torch.Tensor, epsilon: Radius, param_ndim: Optional[int] = -1, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    r"""Draw each datum uniformly from the L-infinity ball of radius ``epsilon``: uniform coordinates.

    Maths: ``x_i = epsilon * (2 U_i - 1)`` with ``U_i`` independent uniforms on ``[0, 1)``.

    Scope: per element given ``epsilon``; ``param_ndim`` only says which datum a
    per-datum ``epsilon`` (a tensor of shape ``(N,)``) belongs to.

    Args:
        like: a tensor whose shape, dtype and device the sample takes (its values are unused).
        epsilon: the radius.
        param_ndim: what one datum is (:func:`paramtx.to_batch`).
        generator: the source of randomness (``None``: the default generator).

    Example:
        >>> import torch, paramtx as ptx
        >>> x = ptx.sample_linf_ball(torch.empty(2, 3), epsilon=torch.tensor([1.0, 0.01]),
        ...                          generator=torch.Generator().manual_seed(0))
        >>> x.abs().amax(dim=1) <= torch.tensor([1.0, 0.01])
        tensor([True, True])
    """
    like, (n, d), radius, kwargs, generator = _setup("sample_linf_ball", like, epsilon, param_ndim, generator)
    unit = torch.rand((n, d), generator=generator, **kwargs) * 2 - 1
    return _finish(unit * radius, like)
