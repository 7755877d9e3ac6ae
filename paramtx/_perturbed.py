"""``perturbed``: turn a black-box solver into a differentiable function.

Berthet Q., Blondel M., Teboul O., Cuturi M., Vert J.-P., Bach F., *Learning with
Differentiable Perturbed Optimizers*, NeurIPS 2020.

For a solver ``f`` (e.g. ``argmax`` written as a one-hot, a ranking, a shortest
path), the perturbed solver is ``F(θ) = E[f(θ + σZ)]`` and its Jacobian is
``E[f(θ + σZ) ∇ν(Z)ᵀ] / σ`` (see :mod:`paramtx._noise` for ``∇ν``). Both are
Monte-Carlo means over ``num_samples`` draws.

Memory does not grow with ``num_samples``: the draws are processed in chunks and
nothing per-draw is kept for backward. Backward uses one of two strategies:

* ``"jacobian"``: forward also accumulates the Jacobian estimate, one
  ``(out_size, in_size)`` matrix per example; backward is a product with it.
* ``"recompute"``: forward keeps only ``θ`` and the seed of its draws; backward
  draws the same noise again, chunk by chunk, and evaluates ``f`` again (so
  ``f`` must be deterministic).

``"auto"`` picks ``"jacobian"`` when that matrix is cheap to build and to hold
(see :func:`_use_jacobian`; the crossover is measured in
``benchmarks/bench_perturbed.py``), else ``"recompute"``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

import torch

from paramtx import _validate
from paramtx._noise import NOISES, NoiseDraw, sample_noise

STRATEGIES = ("auto", "jacobian", "recompute")

# One chunk draws about this many bytes of noise (the working set of a chunk is
# a small multiple of it).
_CHUNK_BYTES = 4 * 2**20
# "auto" builds the Jacobian when it holds at most this many bytes ...
_JACOBIAN_MAX_BYTES = 64 * 2**20
# ... and costs at most this many multiply-adds per draw, per unit of the
# (in_size + out_size) elements that one more draw and solve would touch.
_JACOBIAN_FLOPS_RATIO = 64


class _Spec(NamedTuple):
    """Everything about a perturbed call except ``θ``."""

    func: Callable[[torch.Tensor], torch.Tensor]
    num_samples: int
    sigma: float
    noise: str
    chunk_size: Optional[int]
    seed: Optional[int]
    generator: Optional[torch.Generator]
    device: Optional[torch.device]
    strategy: str


def perturbed(
    func: Optional[Callable[..., torch.Tensor]] = None,
    *,
    num_samples: int = 1000,
    sigma: float = 0.05,
    noise: str = "normal",
    batched: bool = True,
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    strategy: str = "auto",
) -> Callable[..., torch.Tensor]:
    """Turn ``func`` into the differentiable ``θ ↦ E[func(θ + σZ)]``.

    Usable as a function, ``perturbed(func, ...)``, and as a decorator, with
    (``@perturbed(sigma=0.5)``) or without (``@perturbed``) arguments.

    ``func`` is a black box: it is called without gradient tracking, on a batch
    of perturbed inputs ``(M, D1, ..., Dk)``, and must return ``(M, ...)``, the
    solution for each input (for the estimator to be the gradient of a convex
    smoothing, the solution of a linear program over ``θ``, such as
    ``argmax``, a ranking or a shortest path). With ``batched=True`` the
    returned function maps ``(B, D1, ..., Dk)`` to ``(B, ...)``, per example;
    with ``batched=False`` it maps one example ``(D1, ..., Dk)`` to ``(...)``.
    The four signatures of the reference implementation are the cases where
    ``(...)`` is ``(D1, ..., Dk)`` or ``()``; any other per-example output
    shape works too. Extra positional and keyword arguments of the returned
    function are passed to ``func`` unchanged (and are not differentiated).

    Scope: per example. The noise has the shape of one example and is drawn
    independently for every example and every sample.

    Randomness: with ``seed``, every call draws the same noise, so the returned
    function is deterministic (bit for bit, for a given device, ``chunk_size``
    and torch version). With ``generator``, each call draws its seed from it.
    With neither, each call draws its seed from torch's global RNG, so
    ``torch.manual_seed`` makes a run reproducible. Under ``torch.func.vmap``
    the vmapped copies share one draw (as ``randomness="same"`` would), which
    makes ``vmap(f)(x)`` equal ``stack([f(xi) for xi in x])`` for a given seed.

    Transforms: works under autograd and ``torch.func.grad``, ``vjp``,
    ``vmap`` and ``jacrev``, nested in any order. Only first derivatives are
    estimated; forward-mode AD (``jvp``, ``jacfwd``) is not supported.

    Args:
        func: the solver; ``None`` to get a decorator.
        num_samples: how many perturbed inputs the means are taken over.
        sigma: the scale ``σ`` of the perturbation.
        noise: ``"normal"`` or ``"gumbel"``.
        batched: whether inputs carry a leading batch dim (then they need rank >= 2).
        device: where to draw the noise and call ``func`` (the input's device if
            ``None``); results come back on the input's device.
        chunk_size: how many samples to draw and solve at once; by default about
            4 MiB of noise per chunk. Peak memory grows with it, not with
            ``num_samples``.
        seed: a fixed seed, ``0 <= seed < 2**64``.
        generator: a ``torch.Generator`` to draw each call's seed from.
        strategy: how backward gets the Jacobian estimate: ``"jacobian"``
            (accumulated in forward), ``"recompute"`` (noise redrawn from the
            saved seed in backward) or ``"auto"``.

    Returns:
        The perturbed function, or a decorator making one if ``func`` is ``None``.

    Raises:
        TypeError, ValueError: for an argument of the wrong type or value; the
            returned function raises ``ValueError`` for a batched input of rank < 2.

    Example:
        >>> import torch, paramtx as ptx
        >>> @ptx.perturbed(num_samples=10_000, sigma=0.5, noise="gumbel", seed=0)
        ... def argmax(x):
        ...     return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).float()
        >>> theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]], requires_grad=True)
        >>> argmax(theta)                            # ≈ softmax(theta / 0.5)
        tensor([[0.0072, 0.8173, 0.0132, 0.1599, 0.0024]], grad_fn=<SelectBackward0>)
        >>> torch.softmax(theta / 0.5, -1)
        tensor([[0.0055, 0.8152, 0.0122, 0.1646, 0.0025]], grad_fn=<SoftmaxBackward0>)
        >>> argmax(theta)[0, 1].backward()         # a Monte-Carlo estimate of ...
        >>> theta.grad
        tensor([[ 0.0106,  0.3190, -0.0323, -0.2509, -0.0296]])
        >>> torch.func.grad(lambda t: torch.softmax(t / 0.5, -1)[0, 1])(theta.detach())  # ... this
        tensor([[-0.0090,  0.3013, -0.0199, -0.2684, -0.0040]])
    """
    options = dict(
        num_samples=num_samples, sigma=sigma, noise=noise, batched=batched, device=device,
        chunk_size=chunk_size, seed=seed, generator=generator, strategy=strategy,
    )
    spec, batched = make_spec("perturbed", func, **options)
    if func is None:
        return functools.partial(perturbed, **options)
    return wrap("perturbed", func, spec, batched)


def make_spec(
    api: str,
    func: object,
    *,
    num_samples: object,
    sigma: object,
    noise: object,
    batched: object,
    device: object,
    chunk_size: object,
    seed: object,
    generator: object,
    strategy: object,
) -> tuple[_Spec, bool]:
    """Check the options of :func:`perturbed` (errors start with ``api``)."""
    num_samples = _validate.check_int(api, "num_samples", num_samples, low=1)
    sigma = _validate.check_real(api, "sigma", sigma, low=0.0, low_inclusive=False)
    if not math.isfinite(sigma):
        raise ValueError(f"{api}: sigma must be finite, got {sigma!r}")
    if not isinstance(noise, str):
        raise TypeError(f"{api}: noise must be a str, got {noise!r} (type {type(noise).__name__})")
    if noise not in NOISES:
        raise ValueError(f"{api}: noise must be one of {NOISES}, got {noise!r}")
    batched = _validate.check_bool(api, "batched", batched)
    if chunk_size is not None:
        chunk_size = _validate.check_int(api, "chunk_size", chunk_size, low=1)
    seed = _check_seed(api, seed, generator)
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"{api}: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"{api}: device must be a str or torch.device, got {device!r}")
        device = torch.device(device)
    if func is not None and not callable(func):
        raise TypeError(f"{api}: func must be callable, got {func!r}")
    spec = _Spec(func, num_samples, sigma, noise, chunk_size, seed, generator, device, strategy)
    return spec, batched


def wrap(api: str, func: Callable[..., Any], spec: _Spec, batched: bool) -> Callable[..., torch.Tensor]:
    """The perturbed version of ``func`` for checked options ``spec``."""

    @functools.wraps(func)
    def perturbed_func(theta: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        _check_input(api, theta, batched)
        call = spec._replace(func=functools.partial(_call_with, func, args, kwargs))
        # Internal layout (K, B, *event): K copies that share their noise
        # (K > 1 only under vmap), B examples with independent noise.
        theta3 = theta.unsqueeze(0) if batched else theta.reshape(1, 1, *theta.shape)
        want_jacobian = torch.is_grad_enabled() and theta.requires_grad
        mean, _, _ = _PerturbedMean.apply(theta3, call, want_jacobian)
        return mean[0] if batched else mean[0, 0]

    return perturbed_func


def _call_with(func: Callable[..., Any], args: tuple, kwargs: dict, x: torch.Tensor) -> Any:
    return func(x, *args, **kwargs)


def _check_seed(api: str, seed: object, generator: object) -> Optional[int]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{api}: generator must be a torch.Generator, got {generator!r}")
    if seed is None:
        return None
    if generator is not None:
        raise ValueError(f"{api}: give seed or generator, not both, got seed={seed!r}")
    seed = _validate.check_int(api, "seed", seed, low=0)
    if seed >= 2**64:
        raise ValueError(f"{api}: seed must satisfy seed < 2**64, got {seed!r}")
    return seed


def _check_input(api: str, theta: object, batched: bool) -> None:
    if not isinstance(theta, torch.Tensor):
        raise TypeError(f"{api}: the input must be a tensor, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise TypeError(f"{api}: the input must be a floating-point tensor, got dtype {theta.dtype}")
    if batched and theta.dim() < 2:
        raise ValueError(
            f"{api}: a batched input must have rank >= 2 (batch, D1, ...), got shape "
            f"{tuple(theta.shape)}; pass batched=False for a single example"
        )


class _PerturbedMean(torch.autograd.Function):
    """``θ (K, B, *event) ↦ (mean (K, B, *out), jacobian or empty, seed)``."""

    @staticmethod
    def forward(theta: torch.Tensor, spec: _Spec, want_jacobian: bool):
        return _forward(theta, spec, want_jacobian)

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
            k, b = grad_mean.shape[:2]
            grad = torch.matmul(grad_mean.reshape(k, b, 1, -1), jacobian)
            return grad.reshape(theta.shape), None, None
        grad = _PerturbedVJP.apply(grad_mean.unsqueeze(0), theta, seed, ctx.spec)
        return grad[0], None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, theta: torch.Tensor, spec: _Spec, want_jacobian: bool):
        # The vmapped copies become more copies K: they share the noise.
        theta = theta.movedim(in_dims[0], 0)
        v, k = theta.shape[:2]
        mean, jacobian, seed = _PerturbedMean.apply(theta.flatten(0, 1), spec, want_jacobian)
        jacobian_dim = None
        if jacobian.dim() == 4:
            jacobian, jacobian_dim = jacobian.unflatten(0, (v, k)), 0
        return (mean.unflatten(0, (v, k)), jacobian, seed), (0, jacobian_dim, None)


class _PerturbedVJP(torch.autograd.Function):
    """``(cotangents (C, K, B, *out), θ, seed) ↦ (C, K, B, *event)`` by redrawing the noise."""

    @staticmethod
    def forward(grads: torch.Tensor, theta: torch.Tensor, seed: torch.Tensor, spec: _Spec):
        return _recomputed_vjp(grads, theta, int(seed), spec)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any):
        raise NotImplementedError("perturbed: second derivatives are not supported")

    @staticmethod
    def vmap(info: Any, in_dims: tuple, grads: torch.Tensor, theta: torch.Tensor, seed: torch.Tensor, spec: _Spec):
        grads_dim, theta_dim = in_dims[0], in_dims[1]
        if in_dims[2] is not None:
            raise NotImplementedError("perturbed: the saved seed cannot be vmapped")
        if theta_dim is None:  # more cotangents for the same θ
            grads = grads.movedim(grads_dim, 0)
            v, c = grads.shape[:2]
            out = _PerturbedVJP.apply(grads.flatten(0, 1), theta, seed, spec)
            return out.unflatten(0, (v, c)), 0
        theta = theta.movedim(theta_dim, 0)  # more copies of θ
        v, k = theta.shape[:2]
        if grads_dim is None:
            grads = grads.unsqueeze(1).expand(grads.shape[0], v, *grads.shape[1:])
        else:
            grads = grads.movedim(grads_dim, 1)
        out = _PerturbedVJP.apply(grads.flatten(1, 2), theta.flatten(0, 1), seed, spec)
        return out.unflatten(1, (v, k)), 1


def _forward(theta: torch.Tensor, spec: _Spec, want_jacobian: bool):
    """The means, and the Jacobian estimate if wanted and cheap (else an empty tensor)."""
    seed = _draw_seed(spec)
    total = jacobian = None
    for out, draw, out_shape in _solutions(theta, spec, seed):
        total = out.sum(2) if total is None else total.add_(out.sum(2))
        if jacobian is None and want_jacobian:
            b, o, d = draw.score.shape[0], out.shape[-1], draw.score.shape[-1]
            want_jacobian = _use_jacobian(spec.strategy, b, o, d, draw.score.element_size())
            if want_jacobian:
                jacobian = torch.zeros(out.shape[0], b, o, d, dtype=out.dtype, device=out.device)
        if jacobian is not None:
            jacobian.add_(torch.matmul(out.transpose(-1, -2), draw.score))
    k, b = theta.shape[:2]
    if jacobian is None:
        jacobian = theta.new_empty(0)
    else:  # the score's constant shift, added once: Σ f ⊗ (score + shift)
        jacobian = jacobian.add_(total.unsqueeze(-1), alpha=draw.shift)
        jacobian = (jacobian / (spec.sigma * spec.num_samples)).to(theta)
    mean = (total / spec.num_samples).reshape(k, b, *out_shape)
    return mean.to(theta), jacobian, torch.tensor(seed, dtype=torch.int64)


def _recomputed_vjp(grads: torch.Tensor, theta: torch.Tensor, seed: int, spec: _Spec) -> torch.Tensor:
    """``E[<g, f(θ + σZ)> ∇ν(Z)] / σ`` for each cotangent ``g``, the forward's noise drawn again."""
    c, k, b = grads.shape[:3]
    total = weight_sum = None
    for out, draw, _ in _solutions(theta, spec, seed):
        g = grads.reshape(c, k, b, 1, -1).to(out)
        weights = torch.matmul(out.unsqueeze(0), g.transpose(-1, -2))  # (C, K, B, n, 1)
        term = torch.matmul(weights.transpose(-1, -2), draw.score)      # (C, K, B, 1, D)
        total = term if total is None else total.add_(term)
        weight_sum = weights.sum(-2, keepdim=True) + (0 if weight_sum is None else weight_sum)
    total = total.add_(weight_sum, alpha=draw.shift)
    grad = total / (spec.sigma * spec.num_samples)
    return grad.reshape(c, *theta.shape).to(theta)


def _solutions(theta: torch.Tensor, spec: _Spec, seed: int) -> Iterator[tuple[torch.Tensor, NoiseDraw, tuple]]:
    """Yield ``(func outputs (K, B, n, out_size), noise draw (B, n, in_size), out_shape)`` per chunk.

    The noise is drawn from a generator seeded with ``seed``: the same seed and
    shapes give the same chunks and the same draws.
    """
    device = spec.device if spec.device is not None else theta.device
    dtype = _work_dtype(theta.dtype)
    k, b = theta.shape[:2]
    event = theta.shape[2:]
    d = math.prod(event)
    base = theta.detach().to(device=device, dtype=dtype).reshape(k, b, 1, d)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    out_shape = None
    for n in _chunk_lengths(spec, b * d * base.element_size()):
        draw = sample_noise(spec.noise, (b, n, d), generator=generator, dtype=dtype, device=device)
        x = torch.add(base, draw.z, alpha=spec.sigma).reshape(k * b * n, *event)
        draw = draw._replace(z=None)
        with torch.no_grad():
            y = spec.func(x)
        del x
        out_shape = _check_output(y, k * b * n, out_shape)
        yield y.reshape(k, b, n, math.prod(out_shape)).to(dtype=dtype, device=device), draw, out_shape


def _check_output(y: object, rows: int, expected: Optional[tuple]) -> tuple:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"perturbed: func must return a tensor, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != rows:
        raise ValueError(
            f"perturbed: func must return one solution per input row: given {rows} rows, "
            f"it returned shape {tuple(y.shape)}"
        )
    shape = tuple(y.shape[1:])
    if expected is not None and shape != expected:
        raise ValueError(f"perturbed: func returned solutions of shape {shape}, earlier {expected}")
    return shape


def _chunk_lengths(spec: _Spec, bytes_per_sample: int) -> Iterator[int]:
    size = spec.chunk_size or max(1, _CHUNK_BYTES // max(1, bytes_per_sample))
    left = spec.num_samples
    while left > 0:
        n = min(size, left)
        yield n
        left -= n


def _use_jacobian(strategy: str, b: int, out_size: int, in_size: int, itemsize: int) -> bool:
    """Whether forward should build the ``(B, out_size, in_size)`` Jacobian estimate.

    Building it costs ``out_size * in_size`` multiply-adds per draw and example;
    recomputing in backward costs one more noise draw and solve, roughly
    proportional to ``in_size + out_size``.
    """
    if strategy != "auto":
        return strategy == "jacobian"
    small = b * out_size * in_size * itemsize <= _JACOBIAN_MAX_BYTES
    cheap = out_size * in_size <= _JACOBIAN_FLOPS_RATIO * (out_size + in_size)
    return small and cheap


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Noise and means in at least single precision."""
    return torch.promote_types(dtype, torch.float32)


def _draw_seed(spec: _Spec) -> int:
    if spec.seed is not None:
        return spec.seed
    generator = spec.generator
    source_device = generator.device if generator is not None else torch.device("cpu")
    seed = torch.randint(2**62, (), generator=generator, device=source_device)
    return int(seed)
