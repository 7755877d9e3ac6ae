"""Noise distributions for perturbed optimizers: samples and their score terms.

A perturbed optimizer averages ``func(theta + sigma * Z)`` over draws of ``Z``
with density ``mu(z) ∝ exp(-nu(z))``. Its gradient estimator needs, next to each
draw, the score term ``∇nu(Z)`` (Berthet et al., 2020, Prop. 3.1):

* ``"normal"``: standard normal, ``nu(z) = |z|² / 2``, so ``∇nu(Z) = Z``.
* ``"gumbel"``: standard Gumbel, ``nu(z) = z + exp(-z)``, so ``∇nu(Z) = 1 - exp(-Z)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

NOISES = ("normal", "gumbel")


class NoiseDraw(NamedTuple):
    """A draw ``z`` and its score term, ``∇nu(z) = score + shift``.

    The constant ``shift`` is kept apart so that sums of ``f(..) * ∇nu(z)`` can
    add it once, on the sum of ``f``, instead of once per element.
    """

    z: torch.Tensor
    score: torch.Tensor
    shift: float


def sample_noise(
    noise: str,
    shape: tuple[int, ...],
    *,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> NoiseDraw:
    """Draw ``Z`` of ``shape`` from ``noise``, with its score term ``∇nu(Z)``.

    Scope: per element (the draws are i.i.d.).

    Normal: ``score`` is ``Z`` itself (the same tensor) and ``shift`` is 0.
    Gumbel: ``Z = -log(-log U)`` for a uniform ``U``, whose score term is
    ``1 - exp(-Z) = 1 + log U``: ``score`` is ``log U`` and ``shift`` is 1.
    ``U`` is clamped below at the dtype's smallest normal number, so every
    draw is finite.

    Args:
        noise: ``"normal"`` or ``"gumbel"``.
        shape: the shape of the draw.
        generator: the random stream; the global one if ``None``.
        dtype: a floating dtype.
        device: where to draw.

    Returns:
        A :class:`NoiseDraw` ``(z, score, shift)`` with ``∇nu(z) = score + shift``.

    Raises:
        ValueError: for another ``noise``.

    Example:
        >>> import torch
        >>> from paramtx._noise import sample_noise
        >>> draw = sample_noise("gumbel", (4,), generator=torch.Generator().manual_seed(0))
        >>> draw.z
        tensor([ 0.3557,  1.3330, -0.8858, -0.7054])
        >>> torch.allclose(draw.score + draw.shift, 1 - torch.exp(-draw.z))
        True
    """
    if noise == "normal":
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return NoiseDraw(z, z, 0.0)
    if noise == "gumbel":
        log_u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        log_u = log_u.clamp_min_(torch.finfo(dtype).tiny).log_()
        z = log_u.neg().log_().neg_()
        return NoiseDraw(z, log_u, 1.0)
    raise ValueError(f"sample_noise: noise must be one of {NOISES}, got {noise!r}")
