"""rai-toolbox's in-place random starts: ``uniform_like_l1_n_ball_``, ``uniform_like_l2_n_ball_``,
``uniform_like_linf_n_ball_``.

Each overwrites ``x`` with a draw of the matching pure sampler
(:func:`paramtx.sample_l1_ball`, ...): the maths lives there, once.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Generator, Tensor, default_generator

from paramtx._transforms.samplers import sample_l1_ball, sample_l2_ball, sample_linf_ball


def _overwrite(api: str, sampler: Callable[..., Tensor], x: object, epsilon, param_ndim, generator) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{api}: x must be a torch.Tensor, got {x!r:.100} (type {type(x).__name__})")
    with torch.no_grad():
        x.copy_(sampler(x, epsilon, param_ndim=param_ndim, generator=generator))


def uniform_like_l1_n_ball_(
    x: Tensor, epsilon: float = 1.0, param_ndim: Optional[int] = -1, generator: Generator = default_generator
) -> None:
    """Overwrite each datum of ``x`` with a uniform draw from the L1 ball of radius ``epsilon``.

    rai-toolbox's name and signature; the draw is :func:`paramtx.sample_l1_ball`'s.
    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). Runs
    under ``torch.no_grad()`` and returns ``None``.

    Example:
        >>> import torch
        >>> from paramtx.perturbations import uniform_like_l1_n_ball_
        >>> x = torch.zeros(2, 3)
        >>> uniform_like_l1_n_ball_(x, epsilon=2.0, generator=torch.Generator().manual_seed(0))
        >>> torch.linalg.norm(x, dim=1, ord=1) < 2.0
        tensor([True, True])
    """
    _overwrite("uniform_like_l1_n_ball_", sample_l1_ball, x, epsilon, param_ndim, generator)


def uniform_like_l2_n_ball_(
    x: Tensor, epsilon: float = 1.0, param_ndim: Optional[int] = -1, generator: Generator = default_generator
) -> None:
    """Overwrite each datum of ``x`` with a uniform draw from the L2 ball of radius ``epsilon``.

    rai-toolbox's name and signature; the draw is :func:`paramtx.sample_l2_ball`'s.
    Scope: per datum (the ``param_ndim`` rule: :func:`paramtx.to_batch`). Runs
    under ``torch.no_grad()`` and returns ``None``.

    Example:
        >>> import torch
        >>> from paramtx.perturbations import uniform_like_l2_n_ball_
        >>> x = torch.zeros(2, 3)
        >>> uniform_like_l2_n_ball_(x, epsilon=2.0, param_ndim=2, generator=torch.Generator().manual_seed(0))
        >>> torch.linalg.norm(x) < 2.0                     # one datum: the whole tensor
        tensor(True)
    """
    _overwrite("uniform_like_l2_n_ball_", sample_l2_ball, x, epsilon, param_ndim, generator)


def uniform_like_linf_n_ball_(
    x: Tensor, epsilon: float = 1.0, param_ndim: Optional[int] = None, generator: Generator = default_generator
) -> None:
    """Overwrite ``x`` with uniform coordinates in ``[-epsilon, epsilon)``: a uniform draw from the L-infinity ball.

    rai-toolbox's name and signature; the draw is :func:`paramtx.sample_linf_ball`'s.
    Scope: per element (``param_ndim`` only places a per-datum ``epsilon``
    tensor; rai-toolbox ignores it). Runs under ``torch.no_grad()`` and returns ``None``.

    Example:
        >>> import torch
        >>> from paramtx.perturbations import uniform_like_linf_n_ball_
        >>> x = torch.zeros(2, 3)
        >>> uniform_like_linf_n_ball_(x, epsilon=2.0, generator=torch.Generator().manual_seed(0))
        >>> x.abs() < 2.0
        tensor([[True, True, True],
                [True, True, True]])
    """
    _overwrite("uniform_like_linf_n_ball_", sample_linf_ball, x, epsilon, param_ndim, generator)
