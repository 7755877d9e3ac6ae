"""The attack loop: ``gradient_ascent`` (rai-toolbox 0.2.1's solver) with random restarts
run as one batch, and ``random_restart`` (rai-toolbox's wrapper) on top of it."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from paramtx._core import validate as _validate
from paramtx.perturbations.models import AdditivePerturbation, PerturbationModel

__all__ = ["gradient_ascent", "random_restart"]

Solver = Callable[..., Tuple[Tensor, Tensor]]


def _builds(factory: object, kind: type) -> bool:
    """Whether ``factory`` is a class (or a ``functools.partial`` of one) whose instances are ``kind``s."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if not inspect.isclass(target):
        return False
    # a Protocol is checked structurally, on the class's attributes
    return isinstance(target, kind) if getattr(kind, "_is_protocol", False) else issubclass(target, kind)


@contextlib.contextmanager
def _frozen_in_eval(model: object) -> Iterator[None]:
    """A module's weights stop requiring grad and it is in eval mode, both restored on exit."""
    if not isinstance(model, nn.Module):
        yield
        return
    weights = [(weight, weight.requires_grad) for weight in model.parameters()]
    modes = [(module, module.training) for module in model.modules()]
    try:
        for weight, _ in weights:
            weight.requires_grad_(False)
        model.eval()
        yield
    finally:
        for weight, requires_grad in weights:
            weight.requires_grad_(requires_grad)
        for module, training in modes:
            module.training = training


def _stacked(tensor: Tensor, restarts: int) -> Tensor:
    """``restarts`` copies of ``tensor`` one after another along dim 0 (its memory format kept)."""
    return tensor if restarts == 1 else torch.cat([tensor] * restarts)


def _keep_better(best: Optional[Tuple[Tensor, Tensor]], losses: Tensor, xadv: Tensor) -> Tuple[Tensor, Tensor]:
    """Per datum, the pair with the lower loss; ties and NaN comparisons keep ``best``."""
    if best is None:
        return losses, xadv
    best_losses, best_x = best
    better = losses < best_losses
    mask = better.reshape(better.shape + (1,) * (xadv.ndim - better.ndim))
    return torch.where(better, losses, best_losses), torch.where(mask, xadv, best_x)


def _check_per_datum_losses(api: str, losses: Tensor, batch: Tensor, why: str) -> None:
    if losses.ndim == 0 and batch.ndim > 0 or losses.ndim > batch.ndim or losses.shape != batch.shape[: losses.ndim]:
        raise ValueError(
            f"{api}: {why} needs criterion to return one loss per datum (e.g. reduction='none'); "
            f"it returned shape {tuple(losses.shape)} for data of shape {tuple(batch.shape)}"
        )


def _check_per_datum_parameters(api: str, pmodel: PerturbationModel, rows: int, restarts: int) -> None:
    # restarts share nothing only if every perturbation parameter holds one slice per row of the batch
    for index, parameter in enumerate(pmodel.parameters()):
        if parameter.ndim == 0 or parameter.shape[0] != rows:
            raise ValueError(
                f"{api}: restarts={restarts} runs the restarts as one batch of {rows} data, so each parameter "
                f"of the perturbation model must have {rows} rows (one per datum); parameter {index} has shape "
                f"{tuple(parameter.shape)} (a perturbation shared across data, e.g. delta_ndim, needs restarts=1)"
            )


def gradient_ascent(
    *,
    model: Callable[[Tensor], Tensor],
    data: Any,
    target: Any,
    optimizer: Union[Optimizer, Callable[..., Optimizer]],
    steps: int,
    perturbation_model: Union[PerturbationModel, Callable[..., PerturbationModel]] = AdditivePerturbation,
    targeted: bool = False,
    use_best: bool = False,
    criterion: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    reduction_fn: Callable[[Tensor], Tensor] = torch.sum,
    restarts: int = 1,
    restarts_per_call: Optional[int] = None,
    **optim_kwargs: Any,
) -> Tuple[Tensor, Tensor]:
    """Solve for perturbations of ``data`` that raise (or, targeted, lower) ``model``'s loss.

    rai-toolbox 0.2.1's solver, same signature and results, plus ``restarts``.
    Each of ``steps`` steps computes
    ``losses = criterion(model(perturbation_model(data)), target)`` and lets
    ``optimizer`` take a descent step on ``s * reduction_fn(losses)``, with
    ``s = -1`` (ascent, the default) or ``s = +1`` when ``targeted``; a last
    evaluation gives the returned losses. ``model`` (if a ``Module``) runs
    in eval mode with its weights frozen, both restored afterwards; ``data``
    and ``target`` are used detached.

    Restarts are one batch: the ``restarts`` copies of the ``N`` examples are
    stacked into ``restarts * N`` data (``perturbation_model`` is built on the
    stacked data, so ``init_fn`` draws an independent start for each), ``model``
    is called once per step on the whole stack, and ``reduction_fn`` reduces
    each restart's losses separately before they are summed (each restart then
    gets exactly the gradient it would get alone). Per example, the restart
    with the best loss is returned (the earliest on ties), as rai-toolbox's
    :func:`random_restart` loop would keep. Keep each example's perturbation
    its own datum in ``optimizer`` (the shims' default ``param_ndim=-1``).
    Scope: per datum, for the choice of the best step and the best restart.

    Args:
        model: maps the perturbed data to what ``criterion`` compares with ``target``.
        data: the ``(N, ...)`` data to perturb (a tensor, or anything
            ``torch.as_tensor`` takes).
        target: what the loss moves away from (towards, when ``targeted``). With
            restarts, a target whose leading dim is ``N`` is one target per example.
        optimizer: a ``torch.optim.Optimizer`` class or a ``functools.partial``
            of one (built as ``optimizer(perturbation_model.parameters(),
            **optim_kwargs)``), e.g. ``paramtx.optim.L2ProjectedOptim``; or an
            instance, only with a built ``perturbation_model`` and ``restarts=1``.
        steps: the number of optimizer steps, ``>= 0``.
        perturbation_model: a :class:`PerturbationModel`, or a class (or partial)
            built as ``perturbation_model(data)``.
        targeted: descend the loss instead of ascending it.
        use_best: per datum, return the perturbed data and loss of the best of
            the steps (and the final evaluation), not the last.
        criterion: per-datum loss ``criterion(output, target)``; default
            ``torch.nn.CrossEntropyLoss(reduction="none")``.
        reduction_fn: reduces the per-datum losses to the scalar differentiated
            (``torch.mean`` for a perturbation shared by the batch).
        restarts: the number of restarts, ``>= 1`` (not in rai-toolbox, whose
            restarts are :func:`random_restart`'s loop).
        restarts_per_call: how many restarts each call of ``model`` sees, ``>= 1``;
            ``None`` (the default): all of them, one call per step. Fewer calls
            save per-call overhead (small models, accelerators); on a CPU, a
            model whose activations for the whole stack outgrow the caches runs
            faster in smaller calls (``1``: the model's calls of a loop over
            restarts, with the perturbation model and optimizer still batched).
            Results are the same either way, to rounding.
        **optim_kwargs: arguments of ``optimizer``.

    Returns:
        ``(perturbed_data, losses)``, detached: ``(N, ...)`` data and their
        ``criterion`` values (never negated).

    Example:
        Push ``x1 = -1`` and ``x2 = 2`` away from 0 by five SGD steps on ``|x + delta|``:

        >>> import torch
        >>> from paramtx.perturbations import gradient_ascent
        >>> distance = lambda output, target: (output - target).abs()
        >>> x, losses = gradient_ascent(model=lambda x: x, data=[-1.0, 2.0], target=0.0,
        ...                             criterion=distance, optimizer=torch.optim.SGD, lr=0.1, steps=5)
        >>> x
        tensor([-1.5000,  2.5000])

        Three random starts per example in the L1 ball of radius 1, run as one
        batch of six; the best start of each example is kept:

        >>> from functools import partial
        >>> from paramtx.perturbations import AdditivePerturbation, uniform_like_l1_n_ball_
        >>> starts = partial(AdditivePerturbation, init_fn=uniform_like_l1_n_ball_,
        ...                  generator=torch.Generator().manual_seed(0))
        >>> x, losses = gradient_ascent(model=lambda x: x, data=[-1.0, 2.0], target=0.0,
        ...                             criterion=distance, optimizer=torch.optim.SGD, lr=0.1, steps=1,
        ...                             perturbation_model=starts, restarts=3)
        >>> losses                      # per example, the highest of its three final losses
        tensor([0.8404, 2.7873])
    """
    api = "gradient_ascent"
    steps = _validate.check_int(api, "steps", steps, low=0)
    restarts = _validate.check_int(api, "restarts", restarts, low=1)
    if restarts_per_call is not None:
        restarts_per_call = _validate.check_int(api, "restarts_per_call", restarts_per_call, low=1)
    targeted = _validate.check_bool(api, "targeted", targeted)
    use_best = _validate.check_bool(api, "use_best", use_best)
    for name, function in (("model", model), ("reduction_fn", reduction_fn)):
        if not callable(function):
            raise TypeError(f"{api}: {name} must be callable, got {function!r:.100} (type {type(function).__name__})")
    if criterion is not None and not callable(criterion):
        raise TypeError(f"{api}: criterion must be callable or None, got {criterion!r:.100}")
    if criterion is None:
        criterion = nn.CrossEntropyLoss(reduction="none")

    data, target = torch.as_tensor(data).detach(), torch.as_tensor(target).detach()
    if restarts > 1 and data.ndim == 0:
        raise ValueError(f"{api}: restarts={restarts} needs data with a batch dim (dim 0), got a 0-dim tensor")
    examples = data.shape[0] if data.ndim else 1
    batch = _stacked(data, restarts)
    per_example_target = target.ndim > 0 and target.shape[0] == examples
    batch_target = _stacked(target, restarts) if per_example_target else target

    pmodel = _build_perturbation_model(api, perturbation_model, batch, restarts)
    optim = _build_optimizer(api, optimizer, pmodel, perturbation_model, restarts, optim_kwargs)
    if restarts > 1:
        _check_per_datum_parameters(api, pmodel, batch.shape[0], restarts)

    sign = 1.0 if targeted else -1.0  # the optimizer descends sign * criterion
    # the model's calls: groups of restarts_per_call restarts of the stack (the last may be smaller)
    group = min(restarts if restarts_per_call is None else restarts_per_call, restarts)
    rows = group * examples

    def in_calls(xadv: Tensor) -> list[tuple[Tensor, Tensor, int]]:
        """``xadv`` cut into the model's calls: (data, their target, their number of restarts)."""
        if rows >= (xadv.shape[0] if xadv.ndim else 1):
            return [(xadv, batch_target, restarts)]
        targets = batch_target.split(rows) if per_example_target else [batch_target] * len(xadv.split(rows))
        return [(x, t, x.shape[0] // examples) for x, t in zip(xadv.split(rows), targets)]

    def objective(xadv: Tensor, target: Tensor) -> Tensor:
        return sign * criterion(model(xadv), target)

    def reduced(losses: Tensor, count: int) -> Tensor:
        """``reduction_fn`` of each of the ``count`` restarts' losses, summed."""
        if count == 1:
            return reduction_fn(losses)
        return torch.stack([reduction_fn(part) for part in losses.chunk(count)]).sum()

    def checked(losses: Tensor, xadv: Tensor) -> Tensor:
        if use_best or restarts > 1:
            _check_per_datum_losses(api, losses, xadv, "use_best=True" if use_best else f"restarts={restarts}")
        return losses

    def descend(xadv: Tensor) -> Tensor:
        """Each call's losses, back-propagated into the perturbation model's parameters."""
        calls = in_calls(xadv)
        if len(calls) == 1:
            losses = checked(objective(xadv, batch_target), xadv)
            reduced(losses, restarts).backward()
            return losses
        # the model's graph is built and freed one call at a time, into the gradient of a
        # detached copy of xadv, which then flows back through the perturbation model
        leaf = xadv.detach().requires_grad_(True)
        parts = []
        for x, target, count in in_calls(leaf):
            part = checked(objective(x, target), x)
            reduced(part, count).backward()
            parts.append(part.detach())
        if leaf.grad is not None:
            xadv.backward(leaf.grad)
        return torch.cat(parts)

    best: Optional[Tuple[Tensor, Tensor]] = None
    with _frozen_in_eval(model), torch.enable_grad():
        for _ in range(steps):
            xadv = pmodel(batch)
            optim.zero_grad(set_to_none=True)
            losses = descend(xadv)
            optim.step()
            if use_best:
                best = _keep_better(best, losses.detach(), xadv.detach())
        optim.zero_grad(set_to_none=True)
        with torch.no_grad():
            xadv = pmodel(batch)
            calls = in_calls(xadv)
            losses = torch.cat([objective(x, target) for x, target, _ in calls]) if len(calls) > 1 else (
                objective(xadv, batch_target)
            )
    if use_best:
        losses, xadv = _keep_better(best, losses, xadv)
    if restarts > 1:
        _check_per_datum_losses(api, losses, batch, f"restarts={restarts}")
        losses, xadv = _best_restart(losses, xadv, restarts)
    return xadv.detach(), (sign * losses).detach()


def _best_restart(losses: Tensor, xadv: Tensor, restarts: int) -> Tuple[Tensor, Tensor]:
    """Per example, the restart with the lowest loss; the earliest one on ties, as a loop over restarts keeps."""
    best: Optional[Tuple[Tensor, Tensor]] = None
    for part_losses, part_x in zip(losses.chunk(restarts), xadv.chunk(restarts)):
        best = _keep_better(best, part_losses, part_x)
    assert best is not None
    return best


def _build_perturbation_model(api: str, perturbation_model: object, batch: Tensor, restarts: int) -> PerturbationModel:
    if _builds(perturbation_model, PerturbationModel):
        return perturbation_model(batch)  # type: ignore[operator]
    if isinstance(perturbation_model, PerturbationModel):
        if restarts > 1:
            raise ValueError(
                f"{api}: restarts={restarts} needs perturbation_model as a class or partial (built on the stacked "
                f"data), got the built {type(perturbation_model).__name__} instance"
            )
        return perturbation_model
    raise TypeError(
        f"{api}: perturbation_model must be a PerturbationModel (a callable with parameters()) or a class or "
        f"partial building one, got {perturbation_model!r:.100}"
    )


def _build_optimizer(
    api: str, optimizer: object, pmodel: PerturbationModel, perturbation_model: object, restarts: int, kwargs: dict
) -> Optimizer:
    if _builds(optimizer, Optimizer):
        return optimizer(pmodel.parameters(), **kwargs)  # type: ignore[operator]
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{api}: optimizer must be a torch.optim.Optimizer, or a class or partial building one, "
            f"got {optimizer!r:.100}"
        )
    if _builds(perturbation_model, PerturbationModel):
        raise TypeError(
            f"{api}: a built optimizer needs a built perturbation_model (whose parameters it holds), "
            f"got perturbation_model={perturbation_model!r:.100}"
        )
    if kwargs:
        raise TypeError(f"{api}: optimizer arguments {sorted(kwargs)} were given with an already built optimizer")
    if restarts > 1:
        raise ValueError(f"{api}: restarts={restarts} needs optimizer as a class or partial, got a built optimizer")
    return optimizer


def random_restart(solver: Solver, repeats: int) -> Solver:
    """Wrap ``solver`` so that one call runs it from ``repeats`` starts and keeps the best per datum.

    rai-toolbox 0.2.1's name and signature. For :func:`gradient_ascent` (or a
    ``functools.partial`` of it) the repeats run as one batch
    (``gradient_ascent(..., restarts=repeats * restarts)``); any other solver,
    returning ``(perturbed_data, losses)`` per datum, is called ``repeats``
    times in a loop. Best: the highest loss, or the lowest when called with
    ``targeted=True``; the earliest on ties. Scope: per datum.

    Args:
        solver: the solver to repeat.
        repeats: the number of starts, ``>= 1``.

    Returns:
        A function with ``solver``'s signature.

    Example:
        >>> import torch
        >>> from functools import partial
        >>> from paramtx.perturbations import (AdditivePerturbation, gradient_ascent, random_restart,
        ...                                    uniform_like_linf_n_ball_)
        >>> solve = random_restart(gradient_ascent, 4)
        >>> starts = partial(AdditivePerturbation, init_fn=uniform_like_linf_n_ball_, epsilon=0.5,
        ...                  generator=torch.Generator().manual_seed(0))
        >>> x, losses = solve(model=lambda x: x, data=[[0.0, 0.0]], target=0.0, perturbation_model=starts,
        ...                   criterion=lambda out, y: (out - y).abs().sum(1), optimizer=torch.optim.SGD,
        ...                   lr=0.1, steps=2)
        >>> x.shape, bool(losses >= 0.4)     # two steps of 0.1 per coordinate from the best of 4 starts
        (torch.Size([1, 2]), True)
    """
    api = "random_restart"
    repeats = _validate.check_int(api, "repeats", repeats, low=1)
    if not callable(solver):
        raise TypeError(f"{api}: solver must be callable, got {solver!r:.100} (type {type(solver).__name__})")
    inner = solver.func if isinstance(solver, functools.partial) else solver
    if inner is gradient_ascent:

        @functools.wraps(inner)
        def batched(*args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor]:
            preset = solver.keywords.get("restarts", 1) if isinstance(solver, functools.partial) else 1
            given = kwargs.pop("restarts", preset)
            restarts = _validate.check_int("gradient_ascent", "restarts", given, low=1)
            return solver(*args, restarts=repeats * restarts, **kwargs)

        return batched

    @functools.wraps(inner)
    def looped(*args: Any, **kwargs: Any) -> Tuple[Tensor, Tensor]:
        sign = 1.0 if kwargs.get("targeted", False) else -1.0  # keep the lowest of sign * loss
        best: Optional[Tuple[Tensor, Tensor]] = None
        for _ in range(repeats):
            xadv, losses = solver(*args, **kwargs)
            best = _keep_better(best, sign * losses, xadv)
        assert best is not None
        return best[1], sign * best[0]

    return looped
