"""``perturbed``: turn a black-box solver into a differentiable function.

Berthet Q., Blondel M., Teboul O., Cuturi M., Vert J.-P., Bach F., *Learning with
Differentiable Perturbed Optimizers*, NeurIPS 2020.

This module checks the options and shapes the call; the estimator itself is in
:mod:`paramtx._perturbations.estimator`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Union, cast, overload

import torch

from paramtx._core import validate as _validate
from paramtx._perturbations.estimator import PerturbedMean, Spec, with_chunk_size
from paramtx._perturbations.noise import NOISES

STRATEGIES = ("auto", "jacobian", "recompute")
# The options of the perturbed APIs, by name. Each public signature lists the
# ones it takes (for ``inspect`` and config tools); inside, they travel by name
# (:func:`options_of`) to :func:`make_spec`, which checks them all in one place.
OPTIONS = (
    "num_samples", "sigma", "noise", "batched", "device", "chunk_size", "seed", "generator",
    "strategy", "control_variate", "antithetic",
)


@overload
def perturbed(
    func: Callable[..., torch.Tensor],
    *,
    num_samples: int = ...,
    sigma: float = ...,
    noise: str = ...,
    batched: bool = ...,
    device: Union[str, torch.device, None] = ...,
    chunk_size: Optional[int] = ...,
    seed: Optional[int] = ...,
    generator: Optional[torch.Generator] = ...,
    strategy: str = ...,
    control_variate: bool = ...,
    antithetic: bool = ...,
) -> Callable[..., torch.Tensor]: ...


@overload
def perturbed(
    func: None = None,
    *,
    num_samples: int = ...,
    sigma: float = ...,
    noise: str = ...,
    batched: bool = ...,
    device: Union[str, torch.device, None] = ...,
    chunk_size: Optional[int] = ...,
    seed: Optional[int] = ...,
    generator: Optional[torch.Generator] = ...,
    strategy: str = ...,
    control_variate: bool = ...,
    antithetic: bool = ...,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]: ...


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
    control_variate: bool = True,
    antithetic: bool = False,
) -> Any:
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
    function are passed to ``func`` unchanged: they are not differentiated, nor
    batched by ``torch.func.vmap``.

    Gradient: the score-function estimate of the Jacobian of
    ``E[func(θ + σZ)]``, ``E[f s(Z)ᵀ] / σ`` with ``s = ∇ν`` the noise's score
    and ``f = func(θ + σZ)``. By default (``control_variate=True``) each
    draw's ``f_i`` is centred on the mean of the other draws, a baseline
    independent of ``Z_i``, so the estimate stays unbiased, costs no extra
    solve, and ignores a constant added to ``func`` (which inflates the plain
    estimate's error): ``J = (Σ_i f_i s_iᵀ - N f̄ s̄ᵀ) / (σ(N - 1))``.
    ``control_variate=False`` gives the plain ``Σ_i f_i s_iᵀ / (σN)``.
    ``antithetic=True`` (normal noise, even ``num_samples``) draws pairs
    ``Z, -Z``; each pair cancels a constant by itself, so the control variate
    then changes nothing. See ``benchmarks/RESULTS.md`` for the errors of each.

    Scope: per example. The noise has the shape of one example and is drawn
    independently for every example and every sample.

    Randomness: with ``seed``, every call draws the same noise, so the returned
    function is deterministic (bit for bit, for a given device, ``chunk_size``
    (or, by default, whether torch runs one thread or several) and torch
    version). With ``generator``, each call draws its seed from it.
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
            4 MiB of noise per chunk on one thread, 32 MiB on several (fewer
            chunks wait less for busy cores). Peak memory grows with it (a few
            times the chunk's noise), not with ``num_samples``.
        seed: a fixed seed, ``0 <= seed < 2**64``.
        generator: a ``torch.Generator`` to draw each call's seed from.
        strategy: how backward gets the Jacobian estimate: ``"jacobian"``
            (accumulated in forward), ``"recompute"`` (noise redrawn from the
            saved seed in backward) or ``"auto"``.
        control_variate: whether to centre each draw on the mean of the others
            (unbiased, lower variance; needs ``num_samples >= 2``).
        antithetic: whether to draw the noise in pairs ``Z, -Z`` (normal noise
            and an even ``num_samples`` only; ``chunk_size`` is then rounded
            down to an even number).

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
        tensor([[0.0050, 0.8151, 0.0123, 0.1657, 0.0019]], grad_fn=<SelectBackward0>)
        >>> torch.softmax(theta / 0.5, -1)
        tensor([[0.0055, 0.8152, 0.0122, 0.1646, 0.0025]], grad_fn=<SoftmaxBackward0>)
        >>> argmax(theta)[0, 1].backward()         # a Monte-Carlo estimate of ...
        >>> theta.grad
        tensor([[-0.0059,  0.2967, -0.0273, -0.2721,  0.0030]])
        >>> torch.func.grad(lambda t: torch.softmax(t / 0.5, -1)[0, 1])(theta.detach())  # ... this
        tensor([[-0.0090,  0.3013, -0.0199, -0.2684, -0.0040]])
    """
    options = options_of(locals())
    spec, batched = make_spec("perturbed", func, **options)
    if func is None:
        return functools.partial(perturbed, **options)
    return wrap(spec, batched)


def options_of(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The perturbation options (:data:`OPTIONS`) among a call's ``arguments``, e.g. its ``locals()``."""
    return {name: arguments[name] for name in OPTIONS if name in arguments}


def make_spec(
    api: str,
    func: object,
    *,
    num_samples: object,
    sigma: object,
    noise: object,
    batched: object,
    device: object = None,
    chunk_size: object = None,
    seed: object = None,
    generator: object = None,
    strategy: object = "auto",
    control_variate: object = True,
    antithetic: object = False,
) -> tuple[Spec, bool]:
    """Check the options of :func:`perturbed` (errors start with ``api``)."""
    num_samples = _validate.check_int(api, "num_samples", num_samples, low=1)
    sigma = _validate.check_real(api, "sigma", sigma, low=0.0, low_inclusive=False)  # (finite, too)
    if not isinstance(noise, str):
        raise TypeError(f"{api}: noise must be a str, got {noise!r} (type {type(noise).__name__})")
    if noise not in NOISES:
        raise ValueError(f"{api}: noise must be one of {NOISES}, got {noise!r}")
    batched = _validate.check_bool(api, "batched", batched)
    if chunk_size is not None:
        chunk_size = _validate.check_int(api, "chunk_size", chunk_size, low=1)
    seed = _check_seed(api, seed, generator)
    if not isinstance(strategy, str):
        raise TypeError(f"{api}: strategy must be a str, got {strategy!r} (type {type(strategy).__name__})")
    if strategy not in STRATEGIES:
        raise ValueError(f"{api}: strategy must be one of {STRATEGIES}, got {strategy!r}")
    control_variate = _validate.check_bool(api, "control_variate", control_variate)
    antithetic = _validate.check_bool(api, "antithetic", antithetic)
    _check_sampling(api, num_samples, noise, control_variate, antithetic)
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"{api}: device must be a str or torch.device, got {device!r}")
        device = torch.device(device)
    if func is not None and not callable(func):
        raise TypeError(f"{api}: func must be callable, got {func!r}")
    # Both checked above; func is None only for perturbed's decorator form, whose spec is unused.
    func = cast(Callable[[torch.Tensor], torch.Tensor], func)
    generator = cast(Optional[torch.Generator], generator)
    spec = Spec(
        api=api, func=func, num_samples=num_samples, sigma=sigma, noise=noise, chunk_size=chunk_size,
        seed=seed, generator=generator, device=device, strategy=strategy,
        control_variate=control_variate, antithetic=antithetic,
    )
    return spec, batched


def _check_sampling(api: str, num_samples: int, noise: str, control_variate: bool, antithetic: bool) -> None:
    if antithetic and noise != "normal":
        raise ValueError(
            f"{api}: antithetic=True needs noise='normal' (pairs Z, -Z need a symmetric law), got noise={noise!r}"
        )
    if antithetic and num_samples % 2:
        raise ValueError(f"{api}: antithetic=True needs an even num_samples (pairs Z, -Z), got {num_samples}")
    if control_variate and not antithetic and num_samples < 2:
        raise ValueError(
            f"{api}: control_variate=True needs num_samples >= 2 (each draw's baseline is the mean of "
            f"the others), got {num_samples}; pass control_variate=False for one sample"
        )


def wrap(spec: Spec, batched: bool) -> Callable[..., torch.Tensor]:
    """The perturbed version of ``spec.func`` for checked options ``spec``."""

    @functools.wraps(spec.func)
    def perturbed_func(theta: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        _check_input(spec.api, theta, batched)
        if batched and theta.shape[0] == 0:
            return _no_examples(spec, theta, args, kwargs)
        # Internal layout (K, B, *event): K copies that share their noise
        # (K > 1 only under vmap), B examples with independent noise.
        theta3 = theta.unsqueeze(0) if batched else theta.reshape(1, 1, *theta.shape)
        call = with_chunk_size(spec._replace(func=functools.partial(_call_with, spec.func, args, kwargs)), theta3)
        want_jacobian = torch.is_grad_enabled() and theta.requires_grad
        mean, _, _ = PerturbedMean.apply(theta3, call, want_jacobian)
        return mean[0] if batched else mean[0, 0]

    return perturbed_func


def _no_examples(spec: Spec, theta: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """The output for a batch of no example: nothing to draw; the solver, called on
    the empty batch, tells the output's shape."""
    if spec.one_hot_index:  # the solver gives the positions of ones in θ's shape
        return theta * 0
    with torch.no_grad():
        solutions = spec.func(theta.detach(), *args, **kwargs)
    if not isinstance(solutions, torch.Tensor) or solutions.shape[:1] != (0,):
        raise ValueError(f"{spec.api}: func must return one solution per input (dim 0 of size 0 here)")
    return solutions.to(theta.dtype) * 0 + theta.sum() * 0  # connected to θ: a zero-size gradient


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


