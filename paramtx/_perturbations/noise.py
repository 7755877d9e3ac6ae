"""Noise distributions for perturbed optimizers: samples and their score terms.

A perturbed optimizer averages ``func(theta + sigma * Z)`` over draws of ``Z``
with density ``mu(z) ∝ exp(-nu(z))``. Its gradient estimator needs, next to each
draw, the score term ``∇nu(Z)`` (Berthet et al., 2020, Prop. 3.1):

* ``"normal"``: standard normal, ``nu(z) = |z|² / 2``, so ``∇nu(Z) = Z``.
* ``"gumbel"``: standard Gumbel, ``nu(z) = z + exp(-z)``, so ``∇nu(Z) = 1 - exp(-Z)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

NOISES = ("normal", "gumbel")


class NoiseDraw(NamedTuple):
    """A perturbed draw ``loc + scale * Z`` and the score term ``∇nu(Z) = score + shift``.

    The constant ``shift`` is kept apart so that sums of ``f(..) * ∇nu(Z)`` can
    add it once, on the sum of ``f``, instead of once per element.
    """

    sample: torch.Tensor
    score: torch.Tensor
    shift: float


class NoiseSampler:
    """Draws ``loc + scale * Z`` and its score term, chunk after chunk, into buffers it reuses.

    Scope: per element (the draws are i.i.d.). Reusing the buffers spares every
    chunk fresh allocations (and their page faults); the tensors of a draw are
    therefore only valid until the next draw.

    Antithetic draws (normal noise only, whose law is symmetric): the draws
    along the second-to-last dim come in pairs, its second half the negation
    of its first half, so every pair's scores sum to exactly zero.

    Normal: ``score`` is ``Z`` and ``shift`` is 0. Gumbel: ``Z = -log(-log U)``,
    whose score term is ``1 - exp(-Z) = 1 + log U``: ``score`` is ``log U`` and
    ``shift`` is 1. ``U = (2k + 1) / 2**24`` for 23 random bits ``k``: a uniform
    on the float32 grid that is never 0 or 1, so every draw is finite.

    Args:
        noise: ``"normal"`` or ``"gumbel"``.
        generator: the random stream; the global one if ``None``.
        dtype: ``torch.float32`` or ``torch.float64``.
        device: where to draw.
        antithetic: whether draws come in pairs ``Z, -Z`` (normal noise only).

    Raises:
        ValueError: for another ``noise``, or ``antithetic`` with Gumbel noise.

    Example:
        >>> import torch
        >>> from paramtx._perturbations.noise import NoiseSampler
        >>> sampler = NoiseSampler("gumbel", generator=torch.Generator().manual_seed(0))
        >>> draw = sampler.draw((4,))
        >>> torch.allclose(draw.score + draw.shift, 1 - torch.exp(-draw.sample))
        True
    """

    def __init__(
        self,
        noise: str,
        *,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
        antithetic: bool = False,
    ) -> None:
        if noise not in NOISES:
            raise ValueError(f"NoiseSampler: noise must be one of {NOISES}, got {noise!r}")
        if antithetic and noise != "normal":
            raise ValueError(f"NoiseSampler: antithetic draws need noise='normal', got noise={noise!r}")
        self.noise, self.generator, self.dtype, self.device = noise, generator, dtype, device
        self.antithetic = antithetic
        self._buffers: dict[str, torch.Tensor] = {}

    def draw(self, shape: tuple[int, ...], loc: Optional[torch.Tensor] = None, scale: float = 1.0) -> NoiseDraw:
        """The next draw of ``Z`` of ``shape``: ``(loc + scale * Z, score, shift)``, ``loc`` broadcast.

        With antithetic draws, ``shape[-2]`` must be even.
        """
        score = self._buffer("score", shape, self.dtype)
        if self.noise == "normal":
            self._normal_into(score)                              # Z
            values, shift, factor = score, 0.0, scale
        else:
            bits = self._buffer("bits", shape, torch.int32).random_(generator=self.generator)
            odd = bits.bitwise_right_shift_(7).bitwise_or_(1)  # 2k + 1 < 2**24
            torch.mul(odd, 2.0**-24, out=score).log_()          # log U
            # -Z = log(-log U), into the bits' memory once they are used (float32).
            spare = bits.view(self.dtype) if self.dtype == torch.float32 else self._buffer("minus_z", shape, self.dtype)
            values = torch.neg(score, out=spare).log_()
            shift, factor = 1.0, -scale
        if loc is None:
            return NoiseDraw(values * factor if values is score else values.mul_(factor), score, shift)
        # One pass: loc + factor * values, in place where values may be overwritten.
        if torch.broadcast_shapes(loc.shape, shape) != tuple(shape):  # loc adds dims: a new tensor
            return NoiseDraw(torch.add(loc, values, alpha=factor), score, shift)
        out = self._buffer("sample", shape, self.dtype) if values is score else values
        return NoiseDraw(torch.add(loc, values, alpha=factor, out=out), score, shift)

    def _normal_into(self, score: torch.Tensor) -> None:
        if not self.antithetic:
            score.normal_(generator=self.generator)
            return
        half = score.shape[-2] // 2
        first = score.narrow(-2, 0, half).normal_(generator=self.generator)
        torch.neg(first, out=score.narrow(-2, half, half))

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[:numel].view(shape)
