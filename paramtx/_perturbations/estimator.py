"""The Monte-Carlo estimator behind :func:`paramtx.perturbed`: forward means and backward products.

For a solver ``f``, the perturbed solver is ``F(θ) = E[f(θ + σZ)]`` and its
Jacobian is ``E[f(θ + σZ) s(Z)ᵀ] / σ`` with ``s = ∇ν`` the noise's score (see
:mod:`paramtx._perturbations.noise`). Both are Monte-Carlo means over the
``N = num_samples`` draws ``Z_i``, with ``f_i = f(θ + σZ_i)`` and ``s_i = s(Z_i)``:

* plain: ``J = Σ_i f_i s_iᵀ / (σN)``;
* control variate (leave-one-out baseline): each ``f_i`` is centred on the
  mean of the *other* draws, ``J = Σ_i (f_i - f̄_{-i}) s_iᵀ / (σN)``, which is
  ``(Σ_i f_i s_iᵀ - N f̄ s̄ᵀ) / (σ(N - 1))``. It is unbiased (``f̄_{-i}`` is
  independent of ``s_i``, and ``E[s] = 0``), costs no extra solve, and is blind
  to a constant added to ``f`` (whose plain estimate's error grows with it);
* antithetic (normal noise): the draws come in pairs ``Z, -Z``; a pair's
  constant part cancels in ``f(θ + σZ) Z - f(θ - σZ) Z``, so the baseline is
  built in and the plain formula is used.

Memory does not grow with ``num_samples``: the draws are made and solved in
chunks (about 4 MiB of noise each on one thread, 32 MiB on several, in reused
buffers) and nothing per draw is kept for backward. Backward uses one of two strategies:

* ``"jacobian"``: forward also accumulates the Jacobian estimate, one
  ``(out_size, in_size)`` matrix per example; backward is a product with it.
* ``"recompute"``: forward keeps only ``θ`` and the seed of its draws; backward
  draws the same noise again, chunk by chunk, and calls ``f`` again (so ``f``
  must be deterministic).

``"auto"`` picks ``"jacobian"`` when that matrix is cheap to build and to hold
(see :func:`_use_jacobian`; the crossover is measured in
``benchmarks/bench_perturbed.py``), else ``"recompute"``. The Function below
also carries a vmap rule: vmapped copies of ``θ`` share one draw of the noise,
and random numbers are only drawn outside every vmap level.

An example whose ``θ`` holds a NaN or an inf gets NaN means and NaN gradients,
never a confident solution.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, NamedTuple, Optional

import torch

from paramtx._perturbations.noise import NoiseDraw, NoiseSampler

# One chunk draws about this many bytes of noise; the working set of a chunk is
# a small multiple of it. On one thread, 2 to 8 MiB ran equally fast on a
# 2-core CPU (benchmarks/bench_perturbed.py). On several threads every op of a
# chunk is a parallel region whose threads wait for each other at its end: on a
# busy machine that waiting dominates, and a few large chunks ran 3x-5x faster
# than many small ones. 32 MiB keeps that (1.2x optax's speed with two busy loops
# beside it) and the memory of N=1e5, B=32, D=100 draws 20x below keeping every
# draw; 64 MiB was no faster on a quiet machine and took 1.3x the memory.
_CHUNK_BYTES = 4 * 2**20
_CHUNK_BYTES_THREADED = 32 * 2**20
# "auto" builds the Jacobian when it holds at most this many bytes ...
_JACOBIAN_MAX_BYTES = 64 * 2**20
# ... and costs at most this many multiply-adds per draw, per unit of the
# (in_size + out_size) elements that one more draw and solve would touch.
_JACOBIAN_FLOPS_RATIO = 128


class Spec(NamedTuple):
    """Everything about a perturbed call except ``θ``."""

    api: str
    func: Callable[[torch.Tensor], torch.Tensor]
    num_samples: int
    sigma: float
    noise: str
    chunk_size: Optional[int]
    seed: Optional[int]
    generator: Optional[torch.Generator]
    device: Optional[torch.device]
    strategy: str
    control_variate: bool = True
    antithetic: bool = False
    # True: func returns, for each row, the flat position of the 1 of a one-hot
    # solution of the row's shape (so sums are counts, and products gathers).
    one_hot_index: bool = False


def example_poison(theta: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per example of ``θ`` (K, B, *event): 0 if finite, NaN if not, shaped to broadcast over ``ndim`` dims."""
    flat = theta.detach().flatten(2)
    poison = flat.amax(-1) * 0 + flat.amin(-1) * 0
    return poison.reshape(*poison.shape, *(1,) * (ndim - 2))


def perturbed_function(
    api: str,
    forward: Callable[[torch.Tensor, Spec, bool], tuple],
    recomputed_vjp: Callable[[torch.Tensor, torch.Tensor, int, Spec], torch.Tensor],
) -> Any:
    """An autograd Function ``θ (K, B, *event) ↦ (mean (K, B, *out), jacobian or empty, seed)``.

    ``forward(θ, spec, want_jacobian)`` computes the triple; backward multiplies
    by the Jacobian estimate where forward built one (``(K, B, out, in)``), and
    otherwise redraws the noise from the seed with ``recomputed_vjp`` (see
    :func:`recomputing_vjp`). Under vmap the copies become more copies ``K``,
    which share their noise. ``api`` names the caller in errors.
    """
    redrawn = recomputing_vjp(api, recomputed_vjp)

    class Perturbed(torch.autograd.Function):
        @staticmethod
        def forward(theta: torch.Tensor, spec: Spec, want_jacobian: bool):
            return forward(theta, spec, want_jacobian)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
            theta, spec, _ = inputs
            _, jacobian, seed = output
            ctx.mark_non_differentiable(jacobian, seed)
            ctx.set_materialize_grads(False)
            ctx.spec = spec
            ctx.save_for_backward(theta, jacobian, seed)

        @staticmethod
        def backward(ctx: Any, grad_mean: Optional[torch.Tensor], _grad_jacobian: Any, _grad_seed: Any):
            if grad_mean is None:
                return None, None, None
            theta, jacobian, seed = ctx.saved_tensors
            if jacobian.dim() == 4:  # (K, B, out_size, in_size), built by forward
                grad = _JacobianVJP.apply(grad_mean, jacobian, theta)
            else:
                grad = redrawn.apply(grad_mean.unsqueeze(0), theta, seed, ctx.spec)[0]
            return grad + example_poison(theta, grad.dim()), None, None

        @staticmethod
        def vmap(info: Any, in_dims: tuple, theta: torch.Tensor, spec: Spec, want_jacobian: bool):
            theta = theta.movedim(in_dims[0], 0)
            v, k = theta.shape[:2]
            mean, jacobian, seed = Perturbed.apply(theta.flatten(0, 1), spec, want_jacobian)
            jacobian_dim = None
            if jacobian.dim() == 4:
                jacobian, jacobian_dim = jacobian.unflatten(0, (v, k)), 0
            return (mean.unflatten(0, (v, k)), jacobian, seed), (0, jacobian_dim, None)

    return Perturbed


class _JacobianVJP(torch.autograd.Function):
    """``(cotangents (K, B, *out), jacobian (K, B, out, in), θ) ↦ (K, B, *event)``.

    The product with the Jacobian estimate built in forward. ``θ`` is an input
    only so that a second derivative raises, as with :func:`recomputing_vjp`,
    instead of silently treating the estimate as constant in ``θ``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(grads: torch.Tensor, jacobian: torch.Tensor, theta: torch.Tensor):
        k, b = grads.shape[:2]
        return torch.matmul(grads.reshape(k, b, 1, -1), jacobian).reshape(theta.shape)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any):
        raise NotImplementedError("perturbed: second derivatives are not supported")


def recomputing_vjp(api: str, vjp: Callable[[torch.Tensor, torch.Tensor, int, Spec], torch.Tensor]) -> Any:
    """An autograd Function ``(cotangents (C, K, B, *out), θ, seed, spec) ↦ (C, K, B, *event)``
    that redraws the noise: ``vjp(grads, θ, seed, spec)``, with a vmap rule (more
    cotangents, or more copies of θ sharing the noise). A second derivative raises,
    naming ``api``.
    """

    class RecomputedVJP(torch.autograd.Function):
        @staticmethod
        def forward(grads: torch.Tensor, theta: torch.Tensor, seed: torch.Tensor, spec: Spec):
            return vjp(grads, theta, int(seed) % 2**64, spec)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
            pass

        @staticmethod
        def backward(ctx: Any, *grads: Any):
            raise NotImplementedError(f"{api}: second derivatives are not supported")

        @staticmethod
        def vmap(info: Any, in_dims: tuple, grads: torch.Tensor, theta: torch.Tensor, seed: torch.Tensor, spec: Spec):
            grads_dim, theta_dim = in_dims[0], in_dims[1]
            if in_dims[2] is not None:
                raise NotImplementedError(f"{api}: the saved seed cannot be vmapped")
            if theta_dim is None:  # more cotangents for the same θ
                grads = grads.movedim(grads_dim, 0)
                v, c = grads.shape[:2]
                out = RecomputedVJP.apply(grads.flatten(0, 1), theta, seed, spec)
                return out.unflatten(0, (v, c)), 0
            theta = theta.movedim(theta_dim, 0)  # more copies of θ
            v, k = theta.shape[:2]
            if grads_dim is None:
                grads = grads.unsqueeze(1).expand(grads.shape[0], v, *grads.shape[1:])
            else:
                grads = grads.movedim(grads_dim, 1)
            out = RecomputedVJP.apply(grads.flatten(1, 2), theta.flatten(0, 1), seed, spec)
            return out.unflatten(1, (v, k)), 1

    return RecomputedVJP


def _forward(theta: torch.Tensor, spec: Spec, want_jacobian: bool):
    """The means, and the Jacobian estimate if wanted and cheap (else an empty tensor)."""
    seed = _draw_seed(spec)
    total = jacobian = score_sum = None
    for chunk in _solutions(theta, spec, seed):
        if total is None:
            score = chunk.draw.score  # (B, n, D)
            k, b, o, d = theta.shape[0], score.shape[0], chunk.size, score.shape[-1]
            total = score.new_zeros(k, b, o)
            dense = not spec.one_hot_index
            if want_jacobian and _use_jacobian(spec.strategy, k * b, o, d, score.element_size(), dense):
                jacobian = score.new_zeros(k, b, o, d)
                score_sum = score.new_zeros(b, d)
        chunk.add_sum_to(total)
        if jacobian is not None and score_sum is not None:
            chunk.add_outer_score_to(jacobian)
            score_sum.add_(chunk.draw.score.sum(-2))
    assert total is not None  # num_samples >= 1: at least one chunk
    if jacobian is None or score_sum is None:
        jacobian = theta.new_empty(0)
    else:  # Σ f ⊗ s = Σ f ⊗ score + Σ f ⊗ shift, the constant shift added once
        correction = _score_correction(spec, score_sum, chunk.draw.shift)
        jacobian = jacobian.add_(total.unsqueeze(-1) * correction.unsqueeze(-2))
        jacobian = (jacobian / _divisor(spec)).to(theta)
    mean = (total / spec.num_samples).reshape(*theta.shape[:2], *chunk.shape).to(theta)
    mean = mean + example_poison(theta, mean.dim())
    # The seed, as an int64 of the same bits, for the recompute strategy.
    seed_bits = torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)
    return mean, jacobian, seed_bits


def _uses_baseline(spec: Spec) -> bool:
    # Antithetic pairs cancel a constant on their own (see the module docstring).
    return spec.control_variate and not spec.antithetic


def _score_correction(spec: Spec, score_sum: torch.Tensor, shift: float) -> torch.Tensor:
    """``c`` (B, D) such that ``Σ_i w_i s_i - [N w̄ s̄] = Σ_i w_i score_i + (Σ_i w_i) c``.

    Plain: ``c = shift`` (``s = score + shift``). With the baseline the shift
    cancels: ``c = -Σ_i score_i / N``.
    """
    if _uses_baseline(spec):
        return score_sum / -spec.num_samples
    return torch.full_like(score_sum, shift)


def _divisor(spec: Spec) -> float:
    n = spec.num_samples
    return spec.sigma * (n - 1 if _uses_baseline(spec) else n)


def _recomputed_vjp(grads: torch.Tensor, theta: torch.Tensor, seed: int, spec: Spec) -> torch.Tensor:
    """The estimator's product with each cotangent ``g``, the forward's noise drawn again.

    With ``w_i = <g, f_i>``: ``Σ_i w_i s_i / (σN)`` (plain) or
    ``(Σ_i w_i s_i - (Σ_i w_i) s̄) / (σ(N - 1))`` (control variate).
    """
    c, k, b = grads.shape[:3]
    device = spec.device if spec.device is not None else theta.device
    g = grads.reshape(c, k, b, -1).to(device=device, dtype=_work_dtype(theta.dtype))
    total = weight_sum = score_sum = None
    for chunk in _solutions(theta, spec, seed):
        weights = chunk.dot(g).unsqueeze(-2)                     # <g, f>: (C, K, B, 1, n)
        term = torch.matmul(weights, chunk.draw.score)           # (C, K, B, 1, D)
        total = term if total is None else total.add_(term)
        summed = weights.sum(-1, keepdim=True)
        weight_sum = summed if weight_sum is None else weight_sum.add_(summed)
        scores = chunk.draw.score.sum(-2)                        # (B, D)
        score_sum = scores if score_sum is None else score_sum.add_(scores)
    assert total is not None and weight_sum is not None and score_sum is not None  # num_samples >= 1
    correction = _score_correction(spec, score_sum, chunk.draw.shift).unsqueeze(-2)  # (B, 1, D)
    total = total.add_(weight_sum * correction)
    grad = total / _divisor(spec)
    return grad.reshape(c, *theta.shape).to(theta)


PerturbedMean = perturbed_function("perturbed", _forward, _recomputed_vjp)
"""``θ (K, B, *event) ↦ (mean (K, B, *out), jacobian or empty, seed)`` of ``spec.func``'s solutions."""


class _Chunk(NamedTuple):
    """One chunk's solutions, for ``K`` copies, ``B`` examples and ``n`` draws.

    ``values`` (K, B, n, size) holds them, or, for one-hot solutions,
    ``positions`` (K, B, n) holds the position of each 1. ``draw`` is the chunk's noise.
    """

    values: Optional[torch.Tensor]
    positions: Optional[torch.Tensor]  # not "index": that would shadow tuple.index
    shape: tuple[int, ...]
    size: int
    draw: NoiseDraw
    inputs: Optional[torch.Tensor] = None  # (K, B, n, D) perturbed inputs, if asked for

    def add_sum_to(self, total: torch.Tensor) -> None:
        """``total (K, B, size) += Σ_n f``."""
        if self.values is not None:
            total.add_(self.values.sum(2))
        else:
            positions = self._positions()
            total.scatter_add_(-1, positions, torch.ones(positions.shape, dtype=total.dtype, device=total.device))

    def add_outer_score_to(self, jacobian: torch.Tensor) -> None:
        """``jacobian (K, B, size, D) += Σ_n f ⊗ score``."""
        score = self.draw.score
        if self.values is not None:
            jacobian.add_(torch.matmul(self.values.transpose(-1, -2), score))
            return
        positions = self._positions()
        k, b, n = positions.shape
        rows = positions + self.size * torch.arange(k * b, device=positions.device).view(k, b, 1)
        scores = score.expand(k, *score.shape).reshape(k * b * n, score.shape[-1])
        jacobian.view(k * b * self.size, -1).index_add_(0, rows.view(-1), scores)

    def dot(self, g: torch.Tensor) -> torch.Tensor:
        """``<g, f>`` for cotangents ``g`` (C, K, B, size): (C, K, B, n)."""
        if self.values is not None:
            return torch.matmul(self.values.unsqueeze(0), g.unsqueeze(-1)).squeeze(-1)
        positions = self._positions()
        return torch.gather(g, -1, positions.expand(g.shape[0], *positions.shape))

    def _positions(self) -> torch.Tensor:
        assert self.positions is not None  # every chunk has values or positions
        return self.positions


def _solutions(theta: torch.Tensor, spec: Spec, seed: int, keep_inputs: bool = False) -> Iterator[_Chunk]:
    """Draw the noise and solve the perturbed problems, chunk by chunk.

    The noise, ``(B, n, D)`` per chunk, comes from a generator seeded with
    ``seed``: the same seed and shapes give the same chunks and the same draws.
    A chunk's tensors are only valid until the next one is drawn. With
    ``keep_inputs``, each chunk also holds the perturbed inputs it solved.
    """
    device = spec.device if spec.device is not None else theta.device
    dtype = _work_dtype(theta.dtype)
    k, b = theta.shape[:2]
    event = theta.shape[2:]
    d = math.prod(event)
    base = theta.detach().to(device=device, dtype=dtype).reshape(k, b, 1, d)
    if k == 1:  # a sample of the noise's own shape can be built in place
        base = base[0]
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    sampler = NoiseSampler(spec.noise, generator=generator, dtype=dtype, device=device, antithetic=spec.antithetic)
    out_shape = None
    for n in _chunk_lengths(spec, b * d * base.element_size()):
        draw = sampler.draw((b, n, d), loc=base, scale=spec.sigma)
        x = draw.sample.reshape(k * b * n, *event)
        inputs = x.view(k, b, n, d) if keep_inputs else None
        draw = draw._replace(sample=x.new_empty(0))  # drop the reference: x is freed after func
        with torch.no_grad():
            y = spec.func(x)
        del x
        if spec.one_hot_index:
            yield _Chunk(None, y.to(device).view(k, b, n), tuple(event), d, draw, inputs)
            continue
        out_shape = _check_output(spec.api, y, k * b * n, out_shape)
        size = math.prod(out_shape)
        yield _Chunk(y.reshape(k, b, n, size).to(dtype=dtype, device=device), None, out_shape, size, draw, inputs)


def _check_output(api: str, y: object, rows: int, expected: Optional[tuple]) -> tuple:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{api}: func must return a tensor, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != rows:
        raise ValueError(
            f"{api}: func must return one solution per input row: given {rows} rows, "
            f"it returned shape {tuple(y.shape)}"
        )
    shape = tuple(y.shape[1:])
    if expected is not None and shape != expected:
        raise ValueError(f"{api}: func returned solutions of shape {shape}, earlier {expected}")
    return shape


def with_chunk_size(spec: Spec, theta: torch.Tensor) -> Spec:
    """``spec`` with its chunk length fixed for ``θ`` (K, B, *event), once per call.

    The default length depends on the number of threads at the time of the
    call; fixing it in the spec makes a recomputing backward split the draws
    exactly as forward did, whatever happens in between.
    """
    if spec.chunk_size is not None:
        return spec
    bytes_per_sample = math.prod(theta.shape[1:]) * _work_dtype(theta.dtype).itemsize
    return spec._replace(chunk_size=_default_chunk_size(bytes_per_sample))


def _default_chunk_size(bytes_per_sample: int) -> int:
    budget = _CHUNK_BYTES if torch.get_num_threads() == 1 else _CHUNK_BYTES_THREADED
    return max(1, budget // max(1, bytes_per_sample))


def _chunk_lengths(spec: Spec, bytes_per_sample: int) -> Iterator[int]:
    size = spec.chunk_size or _default_chunk_size(bytes_per_sample)
    if spec.antithetic:  # a chunk holds whole pairs (num_samples is even)
        size = max(2, size - size % 2)
    left = spec.num_samples
    while left > 0:
        n = min(size, left)
        yield n
        left -= n


def _use_jacobian(strategy: str, b: int, out_size: int, in_size: int, itemsize: int, dense: bool) -> bool:
    """Whether forward should build the Jacobian estimate, ``b`` examples of ``(out_size, in_size)``
    (``b``: the batch, times vmap's where ``torch.func.vmap`` adds one).

    Building it from dense solutions costs ``out_size * in_size`` multiply-adds
    per draw and example (from one-hot positions, only ``in_size``);
    recomputing in backward costs one more noise draw and solve, roughly
    proportional to ``in_size + out_size``.
    """
    if strategy != "auto":
        return strategy == "jacobian"
    small = b * out_size * in_size * itemsize <= _JACOBIAN_MAX_BYTES
    cheap = not dense or out_size * in_size <= _JACOBIAN_FLOPS_RATIO * (out_size + in_size)
    return small and cheap


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Noise and means in at least single precision."""
    return torch.promote_types(dtype, torch.float32)


def _draw_seed(spec: Spec) -> int:
    if spec.seed is not None:
        return spec.seed
    generator = spec.generator
    source_device = generator.device if generator is not None else torch.device("cpu")
    seed = torch.randint(2**62, (), generator=generator, device=source_device)
    return int(seed)
