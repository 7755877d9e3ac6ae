"""``perturbed_max``: the smoothed maximum of a linear program, with its pathwise gradient.

For a solver ``f(θ) ∈ argmax_{y ∈ C} <θ, y>`` over a polytope ``C``, the
perturbed maximum ``F(θ) = E[max_{y ∈ C} <θ + σZ, y>] = E[<θ + σZ, f(θ + σZ)>]``
is convex and smooth, and its gradient is the perturbed solution
``∇F(θ) = E[f(θ + σZ)]`` (Berthet et al., *Learning with Differentiable
Perturbed Optimizers*, NeurIPS 2020, Prop. 2.2). Both are Monte-Carlo means
over the same draws. The gradient is pathwise: a mean of solutions, with no
``1/σ`` score term, so its error is that of the perturbed solution, far below a
score-function estimate of the same gradient.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from paramtx._perturbations.entry import _check_input, make_spec, options_of
from paramtx._perturbations.estimator import Spec, _draw_seed, _solutions, example_poison


def one_hot_argmax_last(x: torch.Tensor) -> torch.Tensor:
    """The one-hot of the largest entry along the last dim (ties: the first).

    Scope: per row of the last dim. It solves ``max <x, y>`` over the product
    of simplices along the last dim.

    Example:
        >>> import torch
        >>> from paramtx._perturbations.max import one_hot_argmax_last
        >>> one_hot_argmax_last(torch.tensor([[0.2, 1.5, -1.0], [3.0, 3.0, 0.0]]))
        tensor([[0., 1., 0.],
                [1., 0., 0.]])
    """
    return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)


def perturbed_max(
    theta: torch.Tensor,
    func: Optional[Callable[..., torch.Tensor]] = None,
    *,
    num_samples: int = 1000,
    sigma: float = 1.0,
    noise: str = "gumbel",
    batched: bool = True,
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    antithetic: bool = False,
) -> torch.Tensor:
    """The perturbed maximum ``F(θ) = E[<θ + σZ, func(θ + σZ)>]``, with gradient ``E[func(θ + σZ)]``.

    ``func`` solves a linear program, ``func(x) ∈ argmax_{y ∈ C} <x, y>``, and
    returns a solution of each input's shape; by default, the one-hot of the
    largest entry along the last dim, for which, with Gumbel noise,
    ``F(θ) = σ logsumexp(θ / σ) + σγ`` (``γ`` Euler's constant) and
    ``∇F(θ) = softmax(θ / σ)``. Its gradient is the perturbed solution, a
    plain Monte-Carlo mean (pathwise, no score term): its error is that of
    :func:`paramtx.perturbed`'s value, not of its gradient estimate.

    Scope: per example (``batched=True``: ``θ`` is ``(B, D1, ...)`` and the
    value is ``(B,)``; ``batched=False``: one example, a scalar value). The
    noise, the randomness and the transforms it works under (autograd,
    ``torch.func.grad``, ``vjp``, ``vmap``, ``jacrev``; first derivatives only)
    are those of :func:`paramtx.perturbed`, whose arguments these are.

    Args:
        theta: the scores.
        func: the solver, called without gradient tracking on a batch of
            perturbed scores ``(M, D1, ...)``; ``None`` for the one-hot argmax
            along the last dim.
        num_samples, sigma, noise, batched, device, chunk_size, seed, generator,
            antithetic: as in :func:`paramtx.perturbed`.

    Returns:
        The perturbed maximum of each example.

    Raises:
        TypeError, ValueError: for an argument of the wrong type or value, or
            a ``func`` whose solutions do not have the shape of an example.

    Example:
        >>> import math, torch, paramtx as ptx
        >>> theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]], requires_grad=True)
        >>> value = ptx.perturbed_max(theta, num_samples=10_000, sigma=0.5, seed=0)
        >>> value                                     # ≈ σ logsumexp(θ/σ) + σγ
        tensor([2.2888], grad_fn=<SelectBackward0>)
        >>> 0.5 * torch.logsumexp(theta.detach() / 0.5, -1) + 0.5 * 0.5772156649
        tensor([2.2908])
        >>> value.sum().backward()
        >>> theta.grad                                # ≈ softmax(θ/σ)
        tensor([[0.0050, 0.8151, 0.0123, 0.1657, 0.0019]])
    """
    api = "perturbed_max"
    solver = one_hot_argmax_last if func is None else func
    spec, batched = make_spec(api, solver, control_variate=False, **options_of(locals()))
    return max_and_solution(spec, batched, theta)[0]


def max_and_solution(spec: Spec, batched: bool, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F(θ), E[f(θ + σZ)])`` for checked options ``spec``; only ``F`` carries a gradient."""
    _check_input(spec.api, theta, batched)
    theta3 = theta.unsqueeze(0) if batched else theta.reshape(1, 1, *theta.shape)
    value, solution = PerturbedMax.apply(theta3, spec)
    if batched:
        return value[0], solution[0]
    return value[0, 0], solution[0, 0]


class PerturbedMax(torch.autograd.Function):
    """``θ (K, B, *event) ↦ (F (K, B), E[f] (K, B, *event))``; the gradient of ``F`` is ``E[f]``."""

    @staticmethod
    def forward(theta: torch.Tensor, spec: Spec):
        return _forward(theta, spec)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        theta, _ = inputs
        _, solution = output
        ctx.mark_non_differentiable(solution)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(theta, solution)

    @staticmethod
    def backward(ctx: Any, grad_value: Optional[torch.Tensor], _grad_solution: Any):
        if grad_value is None:
            return None, None
        theta, solution = ctx.saved_tensors
        return _PathwiseVJP.apply(grad_value, solution, theta), None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, theta: torch.Tensor, spec: Spec):
        # The vmapped copies become more copies K: they share the noise.
        theta = theta.movedim(in_dims[0], 0)
        v, k = theta.shape[:2]
        value, solution = PerturbedMax.apply(theta.flatten(0, 1), spec)
        return (value.unflatten(0, (v, k)), solution.unflatten(0, (v, k))), (0, 0)


class _PathwiseVJP(torch.autograd.Function):
    """``(cotangents (K, B), E[f] (K, B, *event), θ) ↦ cotangent · E[f]``.

    ``θ`` is an input only so that a second derivative raises instead of
    silently treating ``E[f]`` as constant in ``θ``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_value: torch.Tensor, solution: torch.Tensor, theta: torch.Tensor):
        grad = grad_value.reshape(*grad_value.shape, *(1,) * (solution.dim() - 2)) * solution
        return grad + example_poison(theta, grad.dim())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any):
        raise NotImplementedError("perturbed_max: second derivatives are not supported")


def _forward(theta: torch.Tensor, spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    event = tuple(theta.shape[2:])
    total = inner = None
    for chunk in _solutions(theta, spec, _draw_seed(spec), keep_inputs=True):
        if chunk.shape != event:
            raise ValueError(
                f"{spec.api}: func must return solutions of the shape of theta, one per example "
                f"{event}, got {chunk.shape}"
            )
        assert chunk.values is not None and chunk.inputs is not None  # dense solutions, inputs kept
        if total is None or inner is None:
            total = chunk.values.new_zeros(chunk.values.shape[:2] + chunk.values.shape[3:])
            inner = chunk.values.new_zeros(chunk.values.shape[:2])
        total.add_(chunk.values.sum(2))                               # Σ f: (K, B, D)
        inner.add_((chunk.inputs * chunk.values).sum((2, 3)))         # Σ <θ + σZ, f>: (K, B)
    assert total is not None and inner is not None  # num_samples >= 1: at least one chunk
    poison = example_poison(theta, 2)
    value = (inner / spec.num_samples).to(theta) + poison
    solution = (total / spec.num_samples).reshape(theta.shape).to(theta) + poison.reshape(*poison.shape, *(1,) * len(event))
    return value, solution
