"""The perturbed Fenchel-Young loss, with its closed-form gradient.

Berthet et al., *Learning with Differentiable Perturbed Optimizers*, NeurIPS
2020, section 4. For a solver ``f`` turned into ``ŷ(θ) = E[f(θ + σZ)]`` by
:func:`paramtx.perturbed`, the loss ``L(θ; y)`` of a target ``y`` has gradient
``∇_θ L = ŷ(θ) - y`` when ``f`` maximizes ``<θ, ·>`` (``y - ŷ(θ)`` when it
minimizes). The loss itself involves the convex conjugate of the smoothed
maximum, which is not available for a black-box ``f``; so, as in the reference
implementation, the value returned is ``|ŷ(θ) - y|²``, which vanishes exactly
where the gradient does, and the gradient is the closed form above, not the
gradient of that value. Only one forward pass is needed, no Jacobian estimate.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from paramtx._perturbations.entry import make_spec, wrap

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
) -> torch.Tensor:
    """The perturbed Fenchel-Young loss of ``θ`` for targets ``y_true``.

    Scope: per example (``batched=True``: ``θ`` is ``(B, D1, ...)`` and the
    unreduced loss is ``(B,)``; ``batched=False``: one example, a scalar).

    Value ``|ŷ(θ) - y|²`` summed over each example, gradient w.r.t. ``θ``
    ``ŷ(θ) - y`` (``maximize=True``) or ``y - ŷ(θ)`` (``maximize=False``),
    where ``ŷ = perturbed(func)`` (see the module docstring for why). No
    gradient flows to ``y_true``. Works under autograd and ``torch.func``.

    Args:
        theta: the scores, e.g. a model's output.
        y_true: the target solutions, of the shape of ``func``'s output.
        func: the solver, called as ``func(x, *args)`` on a batch ``x`` of
            perturbed scores, as in :func:`paramtx.perturbed`.
        *args: extra arguments for ``func``.
        num_samples, sigma, noise, batched, device, chunk_size, seed, generator:
            as in :func:`paramtx.perturbed`.
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
        >>> loss
        tensor([1.4909], grad_fn=<...>)
        >>> loss.sum().backward()
        >>> theta.grad                        # ŷ(θ) - y, ŷ(θ) ≈ softmax(θ)
        tensor([[ 0.8418, -0.8835,  0.0417]])
        >>> torch.softmax(theta.detach(), -1) - y
        tensor([[ 0.8438, -0.8858,  0.0420]])
    """
    api = "fenchel_young_loss"
    _check_func(api, func)
    spec, batched = make_spec(
        api, func, num_samples=num_samples, sigma=sigma, noise=noise, batched=batched,
        device=device, chunk_size=chunk_size, seed=seed, generator=generator, strategy="auto",
    )
    maximize, reduction = _check_loss_options(api, maximize, reduction)
    y_hat_fn = wrap(spec, batched)
    return _loss(api, y_hat_fn, theta, y_true, args, maximize, batched, reduction)


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
        >>> loss_fn(theta, torch.tensor([[1.0, 0.0, 0.0]]))
        tensor([0.0403], grad_fn=<...>)
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
    ) -> None:
        super().__init__()
        api = type(self).__name__
        _check_func(api, func)
        spec, batched = make_spec(
            api, func, num_samples=num_samples, sigma=sigma, noise=noise, batched=batched,
            device=device, chunk_size=chunk_size, seed=seed, generator=generator, strategy="auto",
        )
        self.maximize, self.reduction = _check_loss_options(api, maximize, reduction)
        self.func, self.num_samples, self.sigma, self.noise = func, spec.num_samples, spec.sigma, spec.noise
        self.batched = batched
        self._y_hat = wrap(spec, batched)

    def forward(self, theta: torch.Tensor, y_true: torch.Tensor, *args: Any) -> torch.Tensor:
        api = type(self).__name__
        return _loss(api, self._y_hat, theta, y_true, args, self.maximize, self.batched, self.reduction)

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
    api: str,
    y_hat_fn: Callable[..., torch.Tensor],
    theta: torch.Tensor,
    y_true: torch.Tensor,
    args: tuple,
    maximize: bool,
    batched: bool,
    reduction: str,
) -> torch.Tensor:
    with torch.no_grad():
        y_hat = y_hat_fn(theta, *args)
    if not isinstance(y_true, torch.Tensor):
        raise TypeError(f"{api}: y_true must be a tensor, got {type(y_true).__name__}")
    if y_true.shape != y_hat.shape:
        raise ValueError(
            f"{api}: y_true must have the shape of func's output {tuple(y_hat.shape)}, "
            f"got {tuple(y_true.shape)}"
        )
    if y_hat.shape != theta.shape:
        raise ValueError(
            f"{api}: func must return solutions of the shape of theta {tuple(theta.shape)}, "
            f"got {tuple(y_hat.shape)}"
        )
    loss = _FenchelYoung.apply(theta, y_hat, y_true, maximize, batched)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _FenchelYoung(torch.autograd.Function):
    """``(θ, ŷ, y) ↦ |ŷ - y|²`` per example, with gradient ``±(ŷ - y)`` w.r.t. ``θ``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(theta: torch.Tensor, y_hat: torch.Tensor, y_true: torch.Tensor, maximize: bool, batched: bool):
        diff = y_hat - y_true.to(y_hat)
        squares = diff.square()
        return squares.reshape(squares.shape[0], -1).sum(-1) if batched else squares.sum()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, y_hat, y_true, maximize, _ = inputs
        ctx.maximize = maximize
        ctx.save_for_backward(y_hat, y_true)

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor):
        y_hat, y_true = ctx.saved_tensors
        diff = y_hat - y_true.to(y_hat)
        if not ctx.maximize:
            diff = -diff
        grad_loss = grad_loss.reshape(grad_loss.shape + (1,) * (diff.dim() - grad_loss.dim()))
        return grad_loss * diff, None, None, None, None
