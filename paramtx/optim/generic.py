"""``GradientTransformationOptimizer``: any paramtx ``GradientTransformation`` as a ``torch.optim`` optimizer."""

from __future__ import annotations

from typing import Any, Callable, DefaultDict, Dict, List, Optional

import optree
import torch
from torch.optim import Optimizer

from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, apply_updates
from paramtx._lift import lift
from paramtx._transforms.elementwise import SCALE
from paramtx.optim.groups import CheckedGroups, check_inner_settings, check_parameters, serving
from paramtx.optim.optimizer import (
    OptimParams,
    add_checked_group,
    mirror_inner_optimizer,
    shared_state,
    step_around,
    write_,
)

__all__ = ["GradientTransformationOptimizer"]

TX_STATE = "paramtx.tx_state"
"""The key in ``optimizer.state`` of the transform's state: one list of state leaves per parameter group."""


class GradientTransformationOptimizer(CheckedGroups, Optimizer):
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
        api = self._api()
        self._compile = _validate.check_bool(api, "compile", compile)
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
            defaults.setdefault("lr", 1.0)  # the step is lr * update: what LR schedulers drive
            Optimizer.__init__(self, params, defaults)
        else:
            check_inner_settings(api, inner_opt_kwargs)  # before torch.optim sees them (it accepts lr=True)
            with serving(api):
                self.inner_opt = mirror_inner_optimizer(self, params, InnerOpt, defaults, inner_opt_kwargs)
        self._constructed = True
        self._check_groups(force=True)
        self._compile_passes()

    def _compile_passes(self) -> None:
        if self._compile:
            # the transform pass and the projection pass become one torch.compile graph each
            # (instance attributes shadowing the methods, on purpose; not pickled, rebuilt)
            self._apply_transform_ = torch.compile(type(self)._apply_transform_.__get__(self))  # type: ignore[method-assign]
            self._apply_projection_ = torch.compile(type(self)._apply_projection_.__get__(self))  # type: ignore[method-assign]

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        where = self._where(group)
        check_inner_settings(where, group)
        check_parameters(where, group)

    # -- the transform's state, kept as plain leaves in self.state -------------------------

    def _group_state(self, index: int, params: List[torch.Tensor]) -> Any:
        stored = self.state.get(TX_STATE)
        leaves = stored[index] if stored is not None and index < len(stored) else None
        spec = self._specs.get(index)
        if spec is None or leaves is None:
            initial = self.tx.init(params)
            spec = optree.tree_structure(initial)
            self._specs[index] = spec
            if leaves is None:
                return initial
        if len(leaves) != spec.num_leaves:
            raise ValueError(
                f"{self._api()} (parameter group {index}): the saved state has {len(leaves)} "
                f"leaves but this transform's state has {spec.num_leaves}"
            )
        return optree.tree_unflatten(spec, leaves)

    def _store_states(self, states: List[Any]) -> None:
        # a new list each time: load_state_dict adopts the saved one without copying it
        self.state[TX_STATE] = [optree.tree_leaves(state) for state in states]

    def _after_load_(self) -> None:
        """Check the loaded transform states against this transform's, and put each leaf on
        the device and in the dtype of the state it stands for (``tx.init`` of the group's params)."""
        stored = self.state.get(TX_STATE)
        if stored is None:
            return
        api = self._api()
        loaded: List[Optional[List[torch.Tensor]]] = []
        for index, group in enumerate(self.param_groups):
            leaves = stored[index] if index < len(stored) else None
            if leaves is None:  # a group that had not stepped yet: its state starts at its first step
                loaded.append(None)
                continue
            template, _ = optree.tree_flatten(self.tx.init(group["params"]))
            if len(leaves) != len(template):
                raise ValueError(
                    f"{api} (parameter group {index}): the saved transform state has {len(leaves)} leaves, "
                    f"this transform's has {len(template)}: was it saved with another transform?"
                )
            for position, (leaf, want) in enumerate(zip(leaves, template)):
                # a float state may come back in another float dtype (params moved to double, say)
                fits = (
                    isinstance(leaf, torch.Tensor)
                    and leaf.shape == want.shape
                    and (leaf.dtype == want.dtype or (leaf.is_floating_point() and want.is_floating_point()))
                )
                if not fits:
                    got = f"{leaf.dtype} {tuple(leaf.shape)}" if isinstance(leaf, torch.Tensor) else type(leaf).__name__
                    raise ValueError(
                        f"{api} (parameter group {index}): leaf {position} of the saved transform state is "
                        f"{got}, where this transform keeps {want.dtype} {tuple(want.shape)}: was it saved "
                        f"with another transform (or the same transforms in another order)?"
                    )
            loaded.append([leaf.to(device=want.device, dtype=want.dtype) for leaf, want in zip(leaves, template)])
        self.state[TX_STATE] = loaded

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
                lr = group["lr"]
                if lr != 1.0:
                    updates = [None if u is None else lift.map_data(self._api(), SCALE, None, u, factor=lr) for u in updates]
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
        # settings a scheduler or a user changed: rejected before anything is written
        self._check_groups()
        if isinstance(self.inner_opt, CheckedGroups):
            self.inner_opt._check_groups()
        return step_around(self.inner_opt, self._apply_transform_, self._apply_projection_, closure)

    # -- mirroring the inner optimizer ------------------------------------------------------

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if not getattr(self, "_constructed", False):
            super().add_param_group(param_group)
            return
        if self.inner_opt is not None:
            add_checked_group(self.inner_opt, param_group, self._check_param_group)
        else:
            super().add_param_group(param_group)
            try:
                self._check_param_group(self.param_groups[-1])
            except Exception:
                self.param_groups.pop()
                raise
        self._check_groups()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        if "tx" in state:  # unpickling or copying this optimizer
            self.__dict__.update(state)
            self._compile_passes()
            return
        inner = self.__dict__.get("inner_opt")
        if inner is None:  # torch.optim's load_state_dict
            super().__setstate__(state)
        else:
            inner.__setstate__(state)
            super().__setstate__(shared_state(inner))

    def __repr__(self) -> str:
        text = super().__repr__()
        if self.inner_opt is None:
            return text
        return text.replace(" (", f" [{type(self.inner_opt).__name__}](", 1)
