"""``GradientTransformationOptimizer``: any paramtx ``GradientTransformation`` as a ``torch.optim`` optimizer."""

from __future__ import annotations

from typing import Any, Callable, DefaultDict, Dict, List, Optional

import optree
import torch
from torch.optim import Optimizer

from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, apply_updates
from paramtx.optim.optimizer import OptimParams, add_checked_group, mirror_inner_optimizer, step_around, write_

__all__ = ["GradientTransformationOptimizer"]

TX_STATE = "paramtx.tx_state"
"""The key in ``optimizer.state`` of the transform's state: one list of state leaves per parameter group."""


class GradientTransformationOptimizer(Optimizer):
    """Run a :class:`paramtx.GradientTransformation` as a ``torch.optim.Optimizer``.

    Each parameter group is one pytree (the list of its parameters) for
    ``tx``. Two modes:

    * ``InnerOpt=None``: ``tx`` maps gradients to updates, and a step sets
      ``params <- apply_updates(params, updates)``; ``tx`` must then include
      the step itself (``ptx.sgd``, ``ptx.adam``, ``ptx.scale(-lr)``,
      ``ptx.frank_wolfe``, ...). The gradients are left as they are.
    * ``InnerOpt`` given (a ``torch.optim.Optimizer`` class, a
      ``functools.partial`` of one, or an instance): ``tx`` maps gradients to
      gradients, which are written into ``p.grad``; then ``InnerOpt.step()``
      updates the parameters. ``state``, ``param_groups`` and ``defaults``
      are the inner optimizer's, so LR schedulers drive it.

    Then, if given, ``projection`` (a pure map of a list of parameters to the
    projected list, e.g. ``functools.partial(ptx.project_l2_ball,
    epsilon=1.0)``) is applied to every group's parameters. The transform's
    state lives in ``optimizer.state`` (as plain leaves), so ``state_dict()``
    / ``load_state_dict()`` resume a run exactly.

    Args:
        params: tensors or parameter-group dicts (``None`` only with an
            ``InnerOpt`` instance).
        tx: the transformation.
        InnerOpt: the inner optimizer, or ``None``.
        projection: a post-step projection of the parameters, or ``None``.
        defaults: default settings of every parameter group.
        compile: run the transform and projection passes through
            ``torch.compile`` (off by default; the first step compiles).
        **inner_opt_kwargs: arguments of ``InnerOpt``.

    Example:
        Top-q sparsified SGD with momentum, entirely from the functional core:

        >>> import torch, paramtx as ptx
        >>> from paramtx.optim import GradientTransformationOptimizer
        >>> w = torch.zeros(4, requires_grad=True)
        >>> opt = GradientTransformationOptimizer(
        ...     [w], ptx.chain(ptx.top_q(q=0.5, param_ndim=None), ptx.sgd(lr=0.1, momentum=0.9)))
        >>> w.backward(gradient=torch.tensor([1.0, -4.0, 0.5, 2.0]))
        >>> opt.step()
        >>> w
        tensor([ 0.0000,  0.4000,  0.0000, -0.2000], requires_grad=True)

        The sign of the gradient, an Adam step, then a projection onto the L2 ball:

        >>> from functools import partial
        >>> v = torch.tensor([0.0, 0.0], requires_grad=True)
        >>> opt = GradientTransformationOptimizer(
        ...     [v], ptx.sign(), torch.optim.Adam, lr=2.0,
        ...     projection=partial(ptx.project_l2_ball, epsilon=1.0, param_ndim=None))
        >>> v.backward(gradient=torch.tensor([-0.3, 0.0]))
        >>> opt.step()
        >>> v.grad, v
        (tensor([-1.,  0.]), tensor([1., 0.], requires_grad=True))
    """

    # Keyed by parameters, as torch's stubs say, and also by the str TX_STATE (no
    # typing.cast where it is read: under torch.compile that call breaks the graph).
    state: DefaultDict[Any, Any]

    def __init__(
        self,
        params: Optional[OptimParams],
        tx: GradientTransformation,
        InnerOpt: Any = None,
        *,
        projection: Optional[Callable[[List[torch.Tensor]], List[torch.Tensor]]] = None,
        defaults: Optional[Dict[str, Any]] = None,
        compile: bool = False,
        **inner_opt_kwargs: Any,
    ) -> None:
        api = type(self).__name__
        if _validate.check_bool(api, "compile", compile):
            # the transform pass and the projection pass become one torch.compile graph each
            # (instance attributes shadowing the methods, on purpose)
            self._apply_transform_ = torch.compile(self._apply_transform_)  # type: ignore[method-assign]
            self._apply_projection_ = torch.compile(self._apply_projection_)  # type: ignore[method-assign]
        if not isinstance(tx, GradientTransformation):
            raise TypeError(f"{api}: tx must be a paramtx.GradientTransformation, got {tx!r} (type {type(tx).__name__})")
        if projection is not None and not callable(projection):
            raise TypeError(f"{api}: projection must be callable or None, got {projection!r}")
        self.tx, self.projection = tx, projection
        self._specs: Dict[int, Any] = {}
        defaults = {} if defaults is None else dict(defaults)
        if InnerOpt is None:
            if inner_opt_kwargs:
                raise TypeError(
                    f"{api}: inner-optimizer arguments {sorted(inner_opt_kwargs)} were given without an InnerOpt"
                )
            if params is None:
                raise TypeError(f"{api}: params must be given when InnerOpt is None, got params=None")
            self.inner_opt: Optional[Optimizer] = None
            super().__init__(params, defaults)
        else:
            self.inner_opt = mirror_inner_optimizer(self, params, InnerOpt, defaults, inner_opt_kwargs)
        self._constructed = True

    # -- the transform's state, kept as plain leaves in self.state -------------------------

    def _group_state(self, index: int, params: List[torch.Tensor]) -> Any:
        stored = self.state.get(TX_STATE)
        leaves = stored[index] if stored is not None and index < len(stored) else None
        spec = self._specs.get(index)
        if spec is None or leaves is None:
            initial = self.tx.init(params)
            initial_leaves, spec = optree.tree_flatten(initial)
            self._specs[index] = spec
            if leaves is None:
                return initial
        if len(leaves) != spec.num_leaves:
            raise ValueError(
                f"{type(self).__name__}: the saved state of parameter group {index} has {len(leaves)} "
                f"leaves but this transform's state has {spec.num_leaves}"
            )
        return optree.tree_unflatten(spec, leaves)

    def _store_states(self, states: List[Any]) -> None:
        # a new list each time: load_state_dict adopts the saved one without copying it
        self.state[TX_STATE] = [optree.tree_leaves(state) for state in states]

    # -- the step -------------------------------------------------------------------------

    @torch.no_grad()
    def _apply_transform_(self) -> None:
        """Run ``tx`` on every group's gradients; write the result into the grads (or params)."""
        new_states = []
        for index, group in enumerate(self.param_groups):
            params = group["params"]
            grads = [param.grad for param in params]
            updates, state = self.tx.update(grads, self._group_state(index, params), params)
            new_states.append(state)
            if self.inner_opt is None:
                updated = apply_updates(params, updates)
                for param, new in zip(params, updated):
                    write_(param, new)
            else:
                for grad, new in zip(grads, updates):
                    if grad is not None and new is not None:
                        write_(grad, new)
        self._store_states(new_states)

    @torch.no_grad()
    def _apply_projection_(self) -> None:
        if self.projection is None:
            return
        for group in self.param_groups:
            for param, new in zip(group["params"], self.projection(list(group["params"]))):
                write_(param, new)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Transform the gradients (and step with ``InnerOpt``, if any), then project."""
        return step_around(self.inner_opt, self._apply_transform_, self._apply_projection_, closure)

    # -- mirroring the inner optimizer ------------------------------------------------------

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if getattr(self, "_constructed", False) and self.inner_opt is not None:
            add_checked_group(self.inner_opt, param_group, lambda group: None)
        else:
            super().add_param_group(param_group)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        inner = self.__dict__.get("inner_opt")
        if inner is None:
            super().__setstate__(state)
        else:
            inner.__setstate__(state)
            super().__setstate__(inner.__getstate__())

    def __repr__(self) -> str:
        text = super().__repr__()
        if self.inner_opt is None:
            return text
        return text.replace(" (", f" [{type(self.inner_opt).__name__}](", 1)
