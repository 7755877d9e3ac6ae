"""The perturbed Fenchel-Young loss: its value up to a constant in ``θ``, and its closed-form gradient.

Berthet et al., *Learning with Differentiable Perturbed Optimizers*, NeurIPS
2020, section 4. For a solver ``f(θ) ∈ argmax_{y ∈ C} <θ, y>``, with perturbed
maximum ``F(θ) = E[<θ + σZ, f(θ + σZ)>]`` (:func:`paramtx.perturbed_max`) and
perturbed solution ``ŷ(θ) = ∇F(θ) = E[f(θ + σZ)]``, the Fenchel-Young loss of
a target ``y`` is ``L(θ; y) = F(θ) + F*(y) - <θ, y>``, with gradient
``ŷ(θ) - y``. The conjugate ``F*(y)`` is out of reach for a black-box ``f``,
but it does not depend on ``θ``: the value returned is ``F(θ) - <θ, y>``, the
loss up to that constant, so it has the loss's gradient, minimizers and
differences between ``θ``'s. (For a solver that minimizes, the signs flip:
``<θ, y> - F(θ)``, gradient ``y - ŷ(θ)``.) ``F`` and ``ŷ`` come from the same
draws, in one forward pass; the gradient is the closed form, with no Jacobian
estimate.

The reference implementation reports ``|ŷ(θ) - y|²`` instead, which vanishes
where the gradient does but is not the loss: it is not comparable across
targets, nor the quantity whose gradient is applied.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import torch

from paramtx._perturbations.entry import make_spec, options_of
from paramtx._perturbations.estimator import Spec
from paramtx._perturbations.max import max_and_solution

REDUCTIONS = ("none", "mean", "sum")


def fenchel_young_loss(
    theta: torch.Tensor,
    y_true: torch.Tensor,
    func: Callable[..., torch.Tensor],
    *args: Any,
    num_samples: int = 1000,
    sigma: float = 0.01,
    noise: str = "normal",
    batched: bool = True,
    maximize: bool = True,
    reduction: str = "none",
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    antithetic: bool = False,
) -> torch.Tensor:
    """The perturbed Fenchel-Young loss of ``θ`` for targets ``y_true``, up to a constant in ``θ``.

    Scope: per example (``batched=True``: ``θ`` is ``(B, D1, ...)`` and the
    unreduced loss is ``(B,)``; ``batched=False``: one example, a scalar).

    Value ``F(θ) - <θ, y>`` per example, with ``F(θ) = E[<θ + σZ, func(θ + σZ)>]``
    the perturbed maximum (:func:`paramtx.perturbed_max`); gradient w.r.t.
    ``θ`` ``ŷ(θ) - y`` with ``ŷ(θ) = E[func(θ + σZ)]`` (``maximize=True``),
    or value ``<θ, y> - F(θ)`` and gradient ``y - ŷ(θ)`` (``maximize=False``).
    This is the Fenchel-Young loss minus ``F*(y)``, a term constant in ``θ``
    (see the module docstring); for the one-hot argmax with Gumbel noise it is
    ``σ logsumexp(θ / σ) + σγ - <θ, y>``. The reference implementation
    reports ``|ŷ(θ) - y|²`` instead. No gradient flows to ``y_true``. Works
    under autograd and ``torch.func``.

    Args:
        theta: the scores, e.g. a model's output.
        y_true: the target solutions, of the shape of ``func``'s output.
        func: the solver, called as ``func(x, *args)`` on a batch ``x`` of
            perturbed scores, as in :func:`paramtx.perturbed`.
        *args: extra arguments for ``func``.
        num_samples, sigma, noise, batched, device, chunk_size, seed, generator,
            antithetic: as in :func:`paramtx.perturbed`.
        maximize: whether ``func`` maximizes (``argmax``) or minimizes
            (``argmin``, shortest paths) ``<θ, y>``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` over the batch.

    Returns:
        The loss: ``(B,)``, or a scalar if ``batched=False`` or reduced.

    Example:
        >>> import torch, paramtx as ptx
        >>> def one_hot_argmax(x):  # the solver: argmax of each row, as a one-hot
        ...     return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
        >>> theta = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
        >>> y = torch.tensor([[0.0, 1.0, 0.0]])
        >>> loss = ptx.fenchel_young_loss(theta, y, one_hot_argmax, sigma=1.0, noise="gumbel",
        ...                               num_samples=10_000, seed=0)
        >>> loss                              # F(θ) - <θ, y>, F(θ) ≈ logsumexp(θ) + γ
        tensor([2.7318], grad_fn=<...>)
        >>> torch.logsumexp(theta.detach(), -1) + 0.5772156649 - (theta.detach() * y).sum(-1)
        tensor([2.7471])
        >>> loss.sum().backward()
        >>> theta.grad                        # ŷ(θ) - y, ŷ(θ) ≈ softmax(θ)
        tensor([[ 0.8418, -0.8835,  0.0417]])
        >>> torch.softmax(theta.detach(), -1) - y
        tensor([[ 0.8438, -0.8858,  0.0420]])
    """
    api = "fenchel_young_loss"
    _check_func(api, func)
    spec, batched = make_spec(api, func, control_variate=False, **options_of(locals()))
    maximize, reduction = _check_loss_options(api, maximize, reduction)
    return _loss(spec, batched, theta, y_true, args, maximize, reduction)


class FenchelYoungLoss(torch.nn.Module):
    """The perturbed Fenchel-Young loss as a module: :func:`fenchel_young_loss` with fixed options.

    ``loss_fn(theta, y_true, *args)`` returns the loss; the options are checked
    once, when the module is built.

    Example:
        >>> import torch, paramtx as ptx
        >>> def one_hot_argmax(x):  # the solver: argmax of each row, as a one-hot
        ...     return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
        >>> loss_fn = ptx.FenchelYoungLoss(one_hot_argmax, num_samples=10_000, sigma=1.0,
        ...                                noise="gumbel", seed=0)
        >>> loss_fn
        FenchelYoungLoss(func=one_hot_argmax, num_samples=10000, sigma=1.0, noise='gumbel',
                         batched=True, maximize=True, reduction='none')
        >>> theta = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
        >>> loss_fn(theta, torch.tensor([[1.0, 0.0, 0.0]]))  # ≈ logsumexp(θ) + γ - θ_0 = 0.7471
        tensor([0.7318], grad_fn=<...>)
    """

    def __init__(
        self,
        func: Callable[..., torch.Tensor],
        num_samples: int = 1000,
        sigma: float = 0.01,
        noise: str = "normal",
        batched: bool = True,
        maximize: bool = True,
        reduction: str = "none",
        *,
        device: Union[str, torch.device, None] = None,
        chunk_size: Optional[int] = None,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        antithetic: bool = False,
    ) -> None:
        super().__init__()
        api = type(self).__name__
        _check_func(api, func)
        spec, batched = make_spec(api, func, control_variate=False, **options_of(locals()))
        self.maximize, self.reduction = _check_loss_options(api, maximize, reduction)
        self.func, self.num_samples, self.sigma, self.noise = func, spec.num_samples, spec.sigma, spec.noise
        self.batched = batched
        self._spec = spec

    def forward(self, theta: torch.Tensor, y_true: torch.Tensor, *args: Any) -> torch.Tensor:
        return _loss(self._spec, self.batched, theta, y_true, args, self.maximize, self.reduction)

    def extra_repr(self) -> str:
        name = getattr(self.func, "__name__", repr(self.func))
        return (
            f"func={name}, num_samples={self.num_samples}, sigma={self.sigma}, noise={self.noise!r}, "
            f"batched={self.batched}, maximize={self.maximize}, reduction={self.reduction!r}"
        )


def _check_func(api: str, func: object) -> None:
    if not callable(func):
        raise TypeError(f"{api}: func must be callable, got {func!r}")


def _check_loss_options(api: str, maximize: object, reduction: object) -> tuple[bool, str]:
    if not isinstance(maximize, bool):
        raise TypeError(f"{api}: maximize must be a bool, got {maximize!r} (type {type(maximize).__name__})")
    if not isinstance(reduction, str):
        raise TypeError(f"{api}: reduction must be a str, got {reduction!r} (type {type(reduction).__name__})")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{api}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return maximize, reduction


def _loss(
    spec: Spec,
    batched: bool,
    theta: torch.Tensor,
    y_true: torch.Tensor,
    args: tuple,
    maximize: bool,
    reduction: str,
) -> torch.Tensor:
    api = spec.api
    if args:
        spec = spec._replace(func=functools.partial(_call_with, spec.func, args))
    with torch.no_grad():
        value, y_hat = max_and_solution(spec, batched, theta)
    if not isinstance(y_true, torch.Tensor):
        raise TypeError(f"{api}: y_true must be a tensor, got {type(y_true).__name__}")
    if y_true.shape != y_hat.shape:
        raise ValueError(
            f"{api}: y_true must have the shape of func's output {tuple(y_hat.shape)}, "
            f"got {tuple(y_true.shape)}"
        )
    loss = _FenchelYoung.apply(theta, value, y_hat, y_true, maximize, batched)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _call_with(func: Callable[..., Any], args: tuple, x: torch.Tensor) -> Any:
    return func(x, *args)


class _FenchelYoung(torch.autograd.Function):
    """``(θ, F, ŷ, y) ↦ ±(F - <θ, y>)`` per example, with gradient ``±(ŷ - y)`` w.r.t. ``θ``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        theta: torch.Tensor, value: torch.Tensor, y_hat: torch.Tensor, y_true: torch.Tensor, maximize: bool, batched: bool
    ):
        products = theta * y_true.to(theta)
        inner = products.reshape(products.shape[0], -1).sum(-1) if batched else products.sum()
        loss = value - inner
        return loss if maximize else -loss

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, _, y_hat, y_true, maximize, _ = inputs
        ctx.maximize = maximize
        ctx.save_for_backward(y_hat, y_true)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor):
        y_hat, y_true = ctx.saved_tensors
        diff = y_hat - y_true.to(y_hat)
        if not ctx.maximize:
            diff = -diff
        grad_loss = grad_loss.reshape(grad_loss.shape + (1,) * (diff.dim() - grad_loss.dim()))
        return grad_loss * diff, None, None, None, None, None
