"""Ready-made perturbed solvers along the last dim: soft ranks, a soft top-k, a soft sort.

Each maps scores ``θ`` of shape ``(..., n)`` to ``E[f(θ + σZ)]`` for a solver
``f`` applied to every list of ``n`` scores along the last dim. Every leading
dim indexes independent lists, each perturbed by its own noise; a 1-D ``θ`` is
one list. The solvers are vectorised over lists and draws (one sort or one
top-k call per chunk of draws, no Python loop over either).

Conventions. Ranks are 0-based and ascending: the smallest score gets rank 0,
the largest ``n - 1``, as ``argsort(argsort(x))`` gives them and as in the
reference implementation of Berthet et al. (2020). This is the convention that
makes ranking a linear program over ``θ``: the ranks of ``x`` are the solution
of ``max_{y ∈ P} <x, y>`` over the permutahedron ``P``, the convex hull of the
permutations of ``(0, 1, ..., n - 1)`` (the largest score takes the largest
value). So the perturbed ranks are the gradient of the convex
``F(θ) = E[max_{y ∈ P} <θ + σZ, y>]``, they lie in the interior of ``P``
(each list sums to ``n (n - 1) / 2``), and the Fenchel-Young loss of
:func:`paramtx.fenchel_young_loss` applies with ``maximize=True``. The sort is
ascending for the same reason: ``sort(x)[rank(x)] = x``. Other conventions are
affine maps of these, which commute with the expectation: 1-based ranks are
``ranks + 1``, descending ranks ``(n - 1) - ranks``, the descending sort
``sort.flip(-1)``.

With Gumbel noise the order of ``θ + σG`` follows the Plackett-Luce law with
weights ``exp(θ / σ)``: the largest is ``i`` with probability
``softmax(θ / σ)_i``, the next is drawn likewise among the others, and so on.
So soft ranks and the soft top-k are exact finite sums over permutations, and
``perturbed_topk(θ, 1)`` has mean ``softmax(θ / σ)``, like
:func:`paramtx.perturbed_argmax`.

Gradients. Ranks and the top-k indicator are linear-program solutions,
piecewise constant in ``θ``: their perturbed means are built on
:func:`paramtx.perturbed` and differentiated by its score-function estimator.
The sort is not piecewise constant but piecewise linear: ``sort(x) = P(x) x``
with ``P(x)`` the permutation matrix that sorts ``x``, and it is 1-Lipschitz,
so the derivative passes under the expectation and the exact Jacobian of
``E[sort(θ + σZ)]`` is the expected permutation matrix ``E[P(θ + σZ)]``
(the pathwise gradient). Its Monte-Carlo estimate is a mean of indicators:
each entry has variance ``p (1 - p) / N <= 1 / (4N)``, whatever ``σ`` and the
scale of ``θ``. A score-function estimate of the same Jacobian averages
``f s(Z)ᵀ / σ`` over draws: without a baseline its variance grows like
``|θ|² / (σ² N)``, and even centred by the leave-one-out baseline it stays far
above the pathwise one (``benchmarks/bench_perturbed_solvers.py`` measures
both). :func:`perturbed_sort` uses the pathwise gradient.

The two meet in the ranking LP's perturbed maximum: ``max_{y ∈ P} <x, y> =
<sort(x), (0, 1, ..., n - 1)>``, so ``F(θ) = <E[sort(θ + σZ)], (0, ..., n - 1)>``,
and its gradient, ``E[P(θ + σZ)]ᵀ (0, ..., n - 1)``, is the soft ranks: for the
same seed, the gradient of that product through :func:`perturbed_sort` equals
:func:`perturbed_ranks` draw for draw.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator, Optional, Union

import torch

from paramtx._core import validate as _validate
from paramtx._perturbations import estimator as _estimator
from paramtx._perturbations.entry import make_spec, options_of, wrap
from paramtx._perturbations.estimator import Spec, example_poison


def ranks(x: torch.Tensor) -> torch.Tensor:
    """The 0-based ascending ranks of ``x`` along its last dim (the ranking LP's solution).

    Scope: per list (last dim). Ties are ranked in order of position.

    Example:
        >>> import torch
        >>> from paramtx._perturbations.solvers import ranks
        >>> ranks(torch.tensor([[0.3, -1.0, 2.0, 0.5]]))
        tensor([[1., 0., 3., 2.]])
    """
    order = torch.argsort(x, dim=-1, stable=True)
    positions = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device).expand(x.shape)
    return torch.empty_like(x).scatter_(-1, order, positions)


def top_k_indicator(x: torch.Tensor, k: int) -> torch.Tensor:
    """The indicator of the ``k`` largest entries of ``x`` along its last dim (the top-k LP's solution).

    Scope: per list (last dim). Each list sums to ``k``; ties are broken by
    ``torch.topk``.

    Example:
        >>> import torch
        >>> from paramtx._perturbations.solvers import top_k_indicator
        >>> top_k_indicator(torch.tensor([[0.3, -1.0, 2.0, 0.5]]), 2)
        tensor([[0., 0., 1., 1.]])
    """
    indices = torch.topk(x, k, dim=-1, sorted=False).indices
    return torch.zeros_like(x).scatter_(-1, indices, 1.0)


def _no_solution(x: torch.Tensor) -> torch.Tensor:
    """The sort's stand-in solver: it returns nothing; :func:`_sorted_draws` sorts the draws themselves."""
    return x.new_empty(x.shape[0], 0)


def perturbed_ranks(
    theta: torch.Tensor,
    *,
    num_samples: int = 1000,
    sigma: float = 1.0,
    noise: str = "gumbel",
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    strategy: str = "auto",
    control_variate: bool = True,
    antithetic: bool = False,
) -> torch.Tensor:
    """Soft ranks ``E[ranks(θ + σZ)]``: the perturbed ranking linear program.

    ``ranks`` are 0-based and ascending (rank 0 for the smallest score, see the
    module docstring for why); each soft list sums to ``n (n - 1) / 2``. With
    Gumbel noise (the default), ``ranks(θ + σG)`` is a Plackett-Luce ranking
    with weights ``exp(θ / σ)``. The gradient is :func:`paramtx.perturbed`'s
    estimator.

    Scope: per list along the last dim; ``θ`` is ``(..., n)`` and the output
    has its shape. The other arguments are those of :func:`paramtx.perturbed`.

    Example:
        >>> import torch, paramtx as ptx
        >>> theta = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
        >>> soft = ptx.perturbed_ranks(theta, num_samples=10_000, sigma=0.5, seed=0)
        >>> soft                                    # the hard ranks are [1, 0, 3, 2]
        tensor([[1.3557, 0.1162, 2.9182, 1.6099]])
        >>> soft.sum(-1)                            # 0 + 1 + 2 + 3
        tensor([6.])
    """
    spec = _list_spec("perturbed_ranks", ranks, **options_of(locals()))
    _check_lists(spec.api, theta)
    return _per_list(spec, theta)


def perturbed_topk(
    theta: torch.Tensor,
    k: int,
    *,
    num_samples: int = 1000,
    sigma: float = 1.0,
    noise: str = "gumbel",
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    strategy: str = "auto",
    control_variate: bool = True,
    antithetic: bool = False,
) -> torch.Tensor:
    """Soft top-k indicator ``E[1{i among the k largest of θ + σZ}]``.

    The top-k indicator is the solution of the linear program
    ``max <x, y>`` over ``{y ∈ [0, 1]^n : Σ y = k}``; its perturbed mean lies in
    that set (each soft list sums to ``k``). With Gumbel noise (the default)
    entry ``i`` is the probability that ``i`` is among the first ``k`` of a
    Plackett-Luce ranking with weights ``exp(θ / σ)``; for ``k = 1`` it is
    ``softmax(θ / σ)``. The gradient is :func:`paramtx.perturbed`'s estimator.

    Scope: per list along the last dim; ``θ`` is ``(..., n)`` and the output
    has its shape. ``k`` is an int, ``0 <= k <= n``. The other arguments are
    those of :func:`paramtx.perturbed`.

    Example:
        >>> import torch, paramtx as ptx
        >>> theta = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
        >>> ptx.perturbed_topk(theta, 2, num_samples=10_000, sigma=0.5, seed=0)
        tensor([[0.3861, 0.0268, 0.9967, 0.5904]])
        >>> ptx.perturbed_topk(theta, 1, num_samples=10_000, sigma=0.5, seed=0)
        tensor([[0.0305, 0.0019, 0.9215, 0.0461]])
        >>> torch.softmax(theta / 0.5, -1)          # its exact mean for k = 1
        tensor([[0.0307, 0.0023, 0.9211, 0.0459]])
    """
    api = "perturbed_topk"
    k = _validate.check_int(api, "k", k, low=0)
    spec = _list_spec(api, functools.partial(top_k_indicator, k=k), **options_of(locals()))
    _check_lists(api, theta)
    n = theta.shape[-1]
    if not 0 <= k <= n:
        raise ValueError(f"{api}: k must satisfy 0 <= k <= n = {n} (the size of theta's last dim), got {k!r}")
    return _per_list(spec, theta)


def perturbed_sort(
    theta: torch.Tensor,
    *,
    num_samples: int = 1000,
    sigma: float = 1.0,
    noise: str = "normal",
    device: Union[str, torch.device, None] = None,
    chunk_size: Optional[int] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    strategy: str = "auto",
    antithetic: bool = False,
) -> torch.Tensor:
    """Soft sort ``E[sort(θ + σZ)]`` (ascending), with the exact pathwise gradient.

    The Jacobian of the soft sort is the expected permutation matrix
    ``E[P(θ + σZ)]`` (``P(x)`` sorts ``x``: ``sort(x) = P(x) x``), a doubly
    stochastic matrix whose entry ``(i, j)`` is the probability that score
    ``j`` lands in position ``i``; it is estimated from the same draws as the
    value (see the module docstring for why this, and not the score-function
    estimator). The default noise is normal: it is centred, so the soft sort
    keeps the mean of ``θ`` on average, where Gumbel noise shifts every value by
    ``σ`` times Euler's constant on average.

    Backward: ``strategy="jacobian"`` keeps the ``(n, n)`` matrix ``E[P]`` of
    every list from forward; ``"recompute"`` keeps only the seed and redraws the
    permutations in backward; ``"auto"`` keeps ``E[P]`` when all of them hold at
    most 64 MiB. Memory does not grow with ``num_samples`` either way.

    Scope: per list along the last dim; ``θ`` is ``(..., n)`` and the output
    has its shape. The other arguments are those of :func:`paramtx.perturbed`
    (``antithetic=True`` helps the value here: each sorted entry is a
    nondecreasing function of the noise, so the pair ``Z, -Z`` is negatively
    correlated); there is no ``control_variate``, as a pathwise gradient has no
    score term to centre. It works under autograd and ``torch.func.grad``,
    ``vjp``, ``vmap`` and ``jacrev`` (first derivatives only).

    Example:
        >>> import torch, paramtx as ptx
        >>> theta = torch.tensor([[0.3, -1.0, 2.0, 0.5]], requires_grad=True)
        >>> soft = ptx.perturbed_sort(theta, num_samples=10_000, sigma=0.5, seed=0)
        >>> soft
        tensor([[-1.0129,  0.1106,  0.6866,  1.9974]], grad_fn=<ViewBackward0>)
        >>> soft[0, 2].backward()       # d soft[2] / d theta_j: how often score j is third
        >>> theta.grad
        tensor([[0.3758, 0.0045, 0.0234, 0.5963]])
    """
    api = "perturbed_sort"
    # The pathwise gradient has no score term, so no baseline to subtract from it.
    spec = _list_spec(api, _no_solution, control_variate=False, **options_of(locals()))
    _check_lists(api, theta)
    if theta.numel() == 0:  # no list, or lists of no score: nothing to draw
        return theta * 0
    lists = theta.reshape(1, -1, theta.shape[-1])  # (K=1 copy, B lists, n)
    # the chunk length fixed now: a recomputing backward then redraws the same chunks
    spec = _estimator.with_chunk_size(spec, lists)
    want_jacobian = torch.is_grad_enabled() and theta.requires_grad
    mean, _, _ = _PerturbedSort.apply(lists, spec, want_jacobian)
    return mean.reshape(theta.shape)


def _list_spec(api: str, func: Any, **options: Any) -> Spec:
    """Check the options of :func:`paramtx.perturbed` for a solver along the last dim."""
    spec, _ = make_spec(api, func, batched=True, **options)
    return spec


def _check_lists(api: str, theta: object) -> None:
    if not isinstance(theta, torch.Tensor):
        raise TypeError(f"{api}: theta must be a tensor, got {type(theta).__name__}")
    if not theta.is_floating_point():
        raise TypeError(f"{api}: theta must be a floating-point tensor, got dtype {theta.dtype}")
    if theta.dim() < 1:
        raise ValueError(f"{api}: theta must have at least one dim (the lists are along the last), got shape ()")


def _per_list(spec: Spec, theta: torch.Tensor) -> torch.Tensor:
    """``perturbed(spec.func)`` on every list along the last dim (``theta`` checked), each list one example."""
    # Lists, not whole tensors, are the examples: the Jacobian estimate is then
    # (n, n) per list, with no cross-list entries that are zero in expectation
    # but would add noise.
    if theta.numel() == 0:  # no list, or lists of no score: nothing to draw
        return theta * 0
    lists = theta.reshape(-1, theta.shape[-1])
    return wrap(spec, True)(lists).reshape(theta.shape)


def _sort_forward(theta: torch.Tensor, spec: Spec, want_jacobian: bool):
    """The mean of the sorted draws and, if wanted, the mean of their permutation matrices."""
    seed = _estimator._draw_seed(spec)
    k, b, n = theta.shape
    total = counts = None
    for values, order in _sorted_draws(theta, spec, seed):
        if total is None:
            total = values.new_zeros(k, b, n)
            itemsize = values.element_size()
            # Building E[P] costs one scatter per sorted entry: cheap; only its size decides.
            if want_jacobian and _estimator._use_jacobian(spec.strategy, k * b, n, n, itemsize, dense=False):
                counts = values.new_zeros(k, b, n * n)
        total.add_(values.sum(2))
        if counts is not None:
            # Entry (i, j) of a draw's P is 1 where score j lands in position i.
            flat = order.add_(n * torch.arange(n, device=order.device)).flatten(2)  # (order is ours)
            counts.scatter_add_(-1, flat, counts.new_ones(()).expand(flat.shape))
    assert total is not None  # num_samples >= 1: at least one chunk
    mean = (total / spec.num_samples).to(theta)
    mean = mean + example_poison(theta, mean.dim())
    if counts is None:
        expected_permutation = theta.new_empty(0)
    else:
        expected_permutation = (counts / spec.num_samples).unflatten(-1, (n, n)).to(theta)
    seed_bits = torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)
    return mean, expected_permutation, seed_bits


def _sorted_draws(theta: torch.Tensor, spec: Spec, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Chunk by chunk, the sorted draws of ``θ + σZ`` (K, B, m, n) and the positions they came from.

    The draws are :func:`paramtx.perturbed`'s (same seed, same chunks, same
    noise); the sort returns the values and their order in one call.
    """
    for chunk in _estimator._solutions(theta, spec, seed, keep_inputs=True):
        assert chunk.inputs is not None  # asked for with keep_inputs
        yield torch.sort(chunk.inputs, dim=-1)


def _recomputed_sort_vjp(grads: torch.Tensor, theta: torch.Tensor, seed: int, spec: Spec) -> torch.Tensor:
    """``E[P(θ + σZ)]ᵀ g`` for each cotangent ``g`` (C, K, B, n), the forward's draws redrawn."""
    c, k, b, n = grads.shape
    device = spec.device if spec.device is not None else theta.device
    g = grads.to(device=device, dtype=_estimator._work_dtype(theta.dtype))
    total = g.new_zeros(c, k, b, n)
    for _, order in _sorted_draws(theta, spec, seed):
        m = order.shape[2]
        # Position i of a draw sends its cotangent back to the score it came from, order[i].
        index = order.flatten(2).expand(c, k, b, m * n)
        total.scatter_add_(-1, index, g.unsqueeze(-2).expand(c, k, b, m, n).reshape(c, k, b, m * n))
    return (total / spec.num_samples).to(theta)


_PerturbedSort = _estimator.perturbed_function("perturbed_sort", _sort_forward, _recomputed_sort_vjp)
"""``θ (K, B, n) ↦ (E[sort(θ + σZ)] (K, B, n), E[P] (K, B, n, n) or empty, seed)``:
``K`` copies share their noise (``K > 1`` only under vmap), the ``B`` lists have
independent noise."""
