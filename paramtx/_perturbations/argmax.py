"""``perturbed_argmax``: a differentiable soft one-hot of the largest entry."""

from __future__ import annotations

from typing import Optional, Union

import torch

from paramtx._perturbations.entry import make_spec, options_of, wrap


def _flat_argmax(x: torch.Tensor) -> torch.Tensor:
    """The position of the largest entry of each row ``x[i]``, over all its dims (ties: the first)."""
    return torch.max(x.reshape(x.shape[0], -1), dim=-1).indices


def one_hot_argmax(x: torch.Tensor) -> torch.Tensor:
    """The one-hot of the largest entry of each row ``x[i]`` (over all its dims).

    Scope: per row. Ties go to the first largest entry, so every row sums to 1.

    Example:
        >>> import torch
        >>> from paramtx._perturbations.argmax import one_hot_argmax
        >>> one_hot_argmax(torch.tensor([[0.2, 1.5, -1.0], [3.0, 3.0, 0.0]]))
        tensor([[0., 1., 0.],
                [1., 0., 0.]])
    """
    flat = x.reshape(x.shape[0], -1)
    return torch.zeros_like(flat).scatter_(-1, _flat_argmax(x).unsqueeze(-1), 1.0).reshape(x.shape)


def perturbed_argmax(
    theta: torch.Tensor,
    *,
    num_samples: int = 1000,
    sigma: float = 1.0,
    noise: str = "gumbel",
    batched: bool = True,
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    strategy: str = "auto",
    control_variate: bool = True,
    antithetic: bool = False,
) -> torch.Tensor:
    """``E[one_hot(argmax(θ + σZ))]``: a differentiable soft one-hot.

    Scope: per example, over all its dims (``batched=True``: ``θ`` is
    ``(B, D1, ...)``; ``batched=False``: one example ``(D1, ...)``). The output
    has ``θ``'s shape and each example sums to 1.

    With Gumbel noise (the default) the mean is exactly ``softmax(θ / σ)``;
    this function estimates it, and its gradient, from ``num_samples`` draws.
    It is :func:`paramtx.perturbed` applied to a one-hot argmax: see there for
    the arguments, the randomness and the transforms it works under.

    Example:
        >>> import torch, paramtx as ptx
        >>> theta = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0]])
        >>> ptx.perturbed_argmax(theta, num_samples=10_000, sigma=0.5, seed=0)
        tensor([[0.0050, 0.8151, 0.0123, 0.1657, 0.0019]])
        >>> torch.softmax(theta / 0.5, dim=-1)
        tensor([[0.0055, 0.8152, 0.0122, 0.1646, 0.0025]])
    """
    api = "perturbed_argmax"
    spec, batched = make_spec(api, one_hot_argmax, **options_of(locals()))
    # The solver hands over only the position of each 1: the sums over samples
    # become counts and index additions, not dense reductions and matmuls.
    spec = spec._replace(func=_flat_argmax, one_hot_index=True)
    return wrap(spec, batched)(theta)
