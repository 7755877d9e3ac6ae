"""``ParamTransformingOptimizer`` and ``ChainedParamTransformingOptimizer``.

A parameter-transforming optimizer wraps an inner ``torch.optim`` optimizer.
Each ``step()`` runs, for every parameter with a gradient:

1. ``_pre_step_transform_`` on the gradient (in place),
2. ``grad *= grad_scale``, then ``grad += grad_bias``,
3. ``InnerOpt.step()``,
4. ``_post_step_transform_`` on the parameter (in place).

Both hooks see each tensor as a batch ``(N, *datum)`` chosen by the group's
``param_ndim`` (the rule of :func:`paramtx.to_batch`): a view of the
parameter whose ``.grad`` is the matching view of the gradient. A tensor whose
layout has no such view (channels-last, transposed) is handed to the hook as a
contiguous copy, written back after it. The optimizer's ``state``,
``param_groups`` and ``defaults`` are the inner optimizer's own objects.

The classes of :mod:`paramtx.optim` hold no maths: their hooks apply the
functional core's ops (:mod:`paramtx._transforms`) through the lift.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable, DefaultDict, Dict, Iterable, Optional, Union

import torch
from torch.optim import SGD, Optimizer
from torch.optim.optimizer import required

from paramtx._core import validate as _validate
from paramtx._lift import lift
from paramtx._lift.dtensor import same_memory
from paramtx._lift.param_ndim import batch_shape, datum_ndim, view_or_none
from paramtx._lift.settings import check_fits
from paramtx._transforms.elementwise import ADD, SCALE
from paramtx.optim.groups import CheckedGroups, check_inner_settings, check_parameters, labelled, serving, setting

__all__ = ["ParamTransformingOptimizer", "ChainedParamTransformingOptimizer"]

REQUIRED: Any = required
"""torch.optim's marker of a setting the caller must give: a group holding it is rejected."""

OptimParams = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]
InnerOptimizer = Union[type, "functools.partial[Optimizer]", Optimizer]


def instantiates_to(obj: object, base: type) -> bool:
    """Whether ``obj`` is a subclass of ``base`` or a ``functools.partial`` of one."""
    target = obj.func if isinstance(obj, functools.partial) else obj
    return inspect.isclass(target) and issubclass(target, base)


def batched(api: str, x: torch.Tensor, param_ndim: Optional[int]) -> tuple[torch.Tensor, bool]:
    """``x`` as its ``(N, *datum)`` batch, and whether that is a copy.

    A view (``x`` itself if it has the batch shape) where the layout allows one;
    otherwise a contiguous copy, which the caller writes back.
    """
    shape = batch_shape(api, x.shape, param_ndim)
    view = view_or_none(x, shape)
    if view is None:  # e.g. channels-last, with the channel dim merged into the batch
        return x.reshape(shape), True  # (reshape copies where no view exists)
    return view, False


def write_(target: torch.Tensor, value: torch.Tensor) -> None:
    """Copy ``value`` into ``target`` unless it already is ``target``'s memory."""
    # (DTensors: their parts on this rank. Compiled, a copy onto itself is optimized away.)
    if not torch.compiler.is_compiling() and same_memory(value, target):
        return
    target.copy_(value)


class _HookBatch:
    """The batch a hook sees: ``param`` (and its ``.grad``) as ``(N, *datum)``.

    Views of the parameter and its gradient where their layouts allow; else
    contiguous copies, which :meth:`write_back` copies into the originals, so a
    hook that works in place reaches them either way.
    """

    def __init__(self, api: str, param: torch.Tensor, param_ndim: Optional[int]) -> None:
        self._original, self._grad = param, param.grad
        self.param, self._param_copied = batched(api, param, param_ndim)
        self.grad: Optional[torch.Tensor] = None
        self._grad_copied = False
        if self._grad is not None:
            self.grad, self._grad_copied = batched(api, self._grad, param_ndim)
        if self.param is not param:
            self.param.grad = self.grad

    def check_gradient_kept(self, hook: str) -> None:
        """A hook must write into the gradient, not replace it."""
        if self.param.grad is not self.grad:
            raise ValueError(
                f"{hook} must modify the gradient in place (param.grad.copy_(...), "
                f"param.grad.mul_(...)); assigning param.grad replaces the view "
                f"instead of writing to the gradient"
            )

    def write_back(self) -> None:
        """Copy what the hook wrote into copies back into the parameter and its gradient."""
        if self._param_copied:
            self._original.copy_(self.param.reshape(self._original.shape))
        if self._grad_copied and self._grad is not None and self.grad is not None:
            self._grad.copy_(self.grad.reshape(self._grad.shape))


def step_around(
    inner: Optional[Optimizer],
    transform: Callable[[], None],
    finish: Callable[[], None],
    closure: Optional[Callable[[], Any]],
) -> Any:
    """A shim's step: ``transform`` the gradients, ``inner.step()``, then ``finish``.

    With a ``closure``, the gradients are transformed after each evaluation of
    it (the inner optimizer may evaluate it several times, as LBFGS does); its
    loss is returned. Without an inner optimizer, ``transform`` makes the step.
    """

    def transformed_closure() -> Any:
        assert closure is not None
        with torch.enable_grad():
            loss = closure()
        transform()
        return loss

    loss = None
    if inner is not None and closure is not None:
        loss = inner.step(transformed_closure)
    elif closure is not None:
        loss = transformed_closure()
    else:
        transform()
        if inner is not None:
            inner.step()
    finish()
    return loss


def with_defaults(defaults: Optional[Dict[str, Any]], **settings: Any) -> Dict[str, Any]:
    """A copy of ``defaults`` with ``settings`` added where it has none (its own values win)."""
    merged = {} if defaults is None else dict(defaults)
    for key, value in settings.items():
        merged.setdefault(key, value)
    return merged


def check_real_in_groups(
    where: str, group: dict, name: str, *, label: Optional[str] = None, per: Optional[str] = None, **bounds: Any
) -> None:
    """``group[name]`` is a real number within ``bounds`` (see ``_validate.check_real``);
    messages call it ``label`` (default: ``name``).

    With ``per`` (``"datum"`` or ``"element"``) it may also be a tensor: one value per
    datum of each parameter of the group, as its hooks see it (broadcastable to
    ``(N,)``), or per element of that batch view. Its values are not read (that
    would need a host sync): the op makes a datum NaN where its value is invalid.
    """
    value = setting(where, group, name)
    if value is REQUIRED:
        raise ValueError(f"{where}: {name} is required: pass {name}=... or give every parameter group a {name!r}")
    if per is None or not isinstance(value, torch.Tensor):
        _validate.check_real(where, label or name, value, **bounds)
        return
    _validate.check_setting(where, label or name, value)
    for param in group["params"]:  # (the hooks see each parameter as its batch, data along dim 0)
        shape = batch_shape(where, param.shape, group.get("param_ndim", -1))
        check_fits(where, label or name, value, shape, -1, per=per)


class ParamTransformingOptimizer(CheckedGroups, Optimizer):
    r"""An optimizer that transforms each gradient before, and each parameter after, ``InnerOpt.step()``.

    Subclasses override ``_pre_step_transform_(param, optim_group)`` (acts in
    place on ``param.grad``) and/or ``_post_step_transform_(param,
    optim_group)`` (acts in place on ``param``), each written for a batch view
    of shape ``(N, *datum)``; ``param_ndim`` (per parameter group) decides the
    datum (the rule of :func:`paramtx.to_batch`). After the pre-step transform the
    gradient is multiplied by ``grad_scale`` and ``grad_bias`` is added.

    ``state``, ``param_groups`` and ``defaults`` are those of the inner
    optimizer, so ``state_dict``, ``load_state_dict``, ``add_param_group`` and
    ``torch.optim.lr_scheduler`` act on both at once.

    Args:
        params: tensors or parameter-group dicts; may be ``None`` when
            ``InnerOpt`` is an optimizer instance.
        InnerOpt: a ``torch.optim.Optimizer`` class, a ``functools.partial`` of
            one, or an instance; it makes the gradient step.
        param_ndim: which trailing dims of a tensor form one datum (per group).
        grad_scale: multiplies each transformed gradient (per group).
        grad_bias: is added to each transformed gradient (per group).
        defaults: default settings of every parameter group.
        compile: run each transform pass (pre-step, post-step) through
            ``torch.compile``, one graph per pass; ``InnerOpt.step()`` runs as
            torch.optim runs it (``foreach``/``fused`` are its options). Off by
            default; the first step compiles, a changed setting recompiles.
        **inner_opt_kwargs: arguments of ``InnerOpt`` (``lr``, ``momentum``, ...).

    Example:
        A subclass that takes the sign of each gradient, with AdamW making the step:

        >>> import torch
        >>> from paramtx.optim import ParamTransformingOptimizer
        >>> class SignedAdamW(ParamTransformingOptimizer):
        ...     def _pre_step_transform_(self, param, optim_group):
        ...         param.grad.sign_()
        >>> w = torch.tensor([-3.0, 4.0], requires_grad=True)
        >>> opt = SignedAdamW([w], InnerOpt=torch.optim.AdamW, lr=0.5, weight_decay=0.0)
        >>> (1000 * w).sum().backward()
        >>> opt.step()
        >>> w.grad, w
        (tensor([1., 1.]), tensor([-3.5000,  3.5000], requires_grad=True))
    """

    # Keyed by parameters, as torch's stubs say, and by str keys of some shims (e.g.
    # DQ_STREAM; no typing.cast where it is read: under torch.compile that call breaks the graph).
    state: DefaultDict[Any, Any]

    def __init__(
        self,
        params: Optional[OptimParams] = None,
        InnerOpt: InnerOptimizer = SGD,
        *,
        param_ndim: Union[int, None] = -1,
        grad_scale: float = 1.0,
        grad_bias: float = 0.0,
        defaults: Optional[Dict[str, Any]] = None,
        compile: bool = False,
        **inner_opt_kwargs: Any,
    ) -> None:
        api = self._api()
        self._compile = _validate.check_bool(api, "compile", compile)
        check_inner_settings(api, inner_opt_kwargs)  # before torch.optim sees them (it accepts lr=True)
        defaults = with_defaults(defaults, param_ndim=param_ndim, grad_scale=grad_scale, grad_bias=grad_bias)
        with serving(api):  # an inner optimizer built here words its messages as this one
            self.inner_opt = mirror_inner_optimizer(self, params, InnerOpt, defaults, inner_opt_kwargs)
        if not isinstance(InnerOpt, Optimizer):
            labelled(self.inner_opt, api)
        self._constructed = True
        self._check_groups(force=True)
        self._compile_passes()

    def _compile_passes(self) -> None:
        if self._compile:
            # each transform pass becomes one torch.compile graph; InnerOpt.step() stays torch.optim's
            # (instance attributes shadowing the methods, on purpose; not pickled, rebuilt)
            self._apply_pre_step_transform_ = torch.compile(type(self)._apply_pre_step_transform_.__get__(self))  # type: ignore[method-assign]
            self._apply_post_step_transform_ = torch.compile(type(self)._apply_post_step_transform_.__get__(self))  # type: ignore[method-assign]

    # -- the hooks subclasses override -------------------------------------------------

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        """Transform ``param.grad`` in place; ``param`` is a ``(N, *datum)`` batch view.

        The default does nothing.
        """
        del param, optim_group

    def _post_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        """Transform ``param`` in place after the inner step; ``param`` is a ``(N, *datum)`` view.

        The default does nothing.
        """
        del param, optim_group

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        """Raise ``TypeError``/``ValueError`` for a parameter group with invalid settings.

        Subclasses extend it (calling ``super()``) for the settings they add,
        and start their messages with ``self._where(group)``. It runs wherever
        settings enter: construction, ``add_param_group``, ``load_state_dict``,
        and ``step()`` for a group whose settings changed (see :mod:`paramtx.optim.groups`).
        """
        where = self._where(group)
        param_ndim = _validate.check_param_ndim(where, setting(where, group, "param_ndim"))
        _validate.check_real(where, "grad_scale", setting(where, group, "grad_scale"))
        _validate.check_real(where, "grad_bias", setting(where, group, "grad_bias"))
        check_inner_settings(where, group)
        check_parameters(where, group)
        for param in group["params"]:
            datum_ndim(where, param.shape, param_ndim)

    def _transforms(self, hook: str) -> bool:
        """Whether ``hook`` (a hook's name) is overridden, i.e. does something."""
        return getattr(type(self), hook) is not getattr(ParamTransformingOptimizer, hook)

    # -- the step ------------------------------------------------------------------------

    @torch.no_grad()
    def _apply_pre_step_transform_(self) -> None:
        """Run ``_pre_step_transform_``, then ``grad_scale``/``grad_bias``, on every gradient."""
        transforms = self._transforms("_pre_step_transform_")
        api = self._api()
        for group in self.param_groups:
            scale, bias = group["grad_scale"], group["grad_bias"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if transforms:
                    batch = _HookBatch(api, param, group["param_ndim"])
                    self._pre_step_transform_(batch.param, optim_group=group)
                    batch.check_gradient_kept(f"{api}._pre_step_transform_")
                    batch.write_back()
                if scale != 1.0:
                    lift.apply_(api, SCALE, None, grad, factor=scale)
                if bias != 0.0:
                    lift.apply_(api, ADD, None, grad, bias=bias)

    @torch.no_grad()
    def _apply_post_step_transform_(self) -> None:
        """Run ``_post_step_transform_`` on every parameter (called by ``step()``)."""
        if not self._transforms("_post_step_transform_"):
            return
        api = self._api()
        for group in self.param_groups:
            for param in group["params"]:
                batch = _HookBatch(api, param, group["param_ndim"])
                self._post_step_transform_(param=batch.param, optim_group=group)
                batch.write_back()

    def project(self) -> None:
        """Deprecated alias of ``_apply_post_step_transform_`` (as in rai-toolbox 0.2)."""
        warnings.warn(
            FutureWarning("`project` is deprecated; use `_apply_post_step_transform_`"),
            stacklevel=2,
        )
        self._apply_post_step_transform_()

    def _prepare_step_(self) -> None:
        """Set up what the transform passes need, before they run (outside a compiled pass).

        The default does nothing; e.g. the top-q shims seed their ``dq`` stream here.
        """

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Transform the gradients, step with ``InnerOpt``, transform the parameters.

        With a ``closure``, the gradients it computes are transformed each time
        the inner optimizer calls it; its loss is returned.
        """
        # settings a scheduler or a user changed: rejected before anything is written
        self._check_groups()
        if isinstance(self.inner_opt, CheckedGroups):
            self.inner_opt._check_groups()
        self._prepare_step_()
        return step_around(self.inner_opt, self._apply_pre_step_transform_, self._apply_post_step_transform_, closure)

    # -- mirroring the inner optimizer ----------------------------------------------------

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group to the inner optimizer (and so to this one), then check its settings."""
        if not getattr(self, "_constructed", False):
            # during Optimizer.__init__: build this optimizer's own groups
            return super().add_param_group(param_group)
        add_checked_group(self.inner_opt, param_group, self._check_param_group)
        self._check_groups()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        if "inner_opt" in state:  # unpickling or copying this optimizer
            self.__dict__.update(state)
            self._compile_passes()
            return
        # torch.optim's load_state_dict: new state and groups, shared with the inner optimizer
        self.inner_opt.__setstate__(state)
        Optimizer.__setstate__(self, shared_state(self.inner_opt))

    def _display_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        body = Optimizer.__repr__(self)[len(type(self).__name__) + 1 :]
        return f"{self._display_name()} [{type(self.inner_opt).__name__}]{body}"


def mirror_inner_optimizer(
    outer: Optimizer,
    params: Optional[OptimParams],
    InnerOpt: Any,
    defaults: Dict[str, Any],
    inner_opt_kwargs: Dict[str, Any],
) -> Optimizer:
    """Build (or adopt) the inner optimizer and make ``outer`` share its state.

    Afterwards ``outer.state``, ``outer.param_groups`` and ``outer.defaults``
    are the inner optimizer's objects, its defaults extended by ``defaults``.
    """
    api = type(outer).__name__
    if instantiates_to(InnerOpt, Optimizer):
        if params is None:
            raise TypeError(f"{api}: params must be given when InnerOpt is an optimizer class, got params=None")
        Optimizer.__init__(outer, params, defaults)
        inner = InnerOpt(outer.param_groups, **inner_opt_kwargs)
    elif isinstance(InnerOpt, Optimizer):
        if inner_opt_kwargs:
            warnings.warn(
                f"{api}: InnerOpt is an optimizer instance, so the inner-optimizer "
                f"arguments {sorted(inner_opt_kwargs)} are ignored",
                stacklevel=3,
            )
        inner = InnerOpt
        Optimizer.__init__(outer, inner.param_groups, defaults)
    else:
        raise TypeError(
            f"{api}: InnerOpt must be a torch.optim.Optimizer class, a functools.partial of "
            f"one, or an optimizer instance, got {InnerOpt!r} (type {type(InnerOpt).__name__})"
        )
    inner.defaults.update(outer.defaults)
    setattr(outer, "inner_opt", inner)  # an attribute of both shims, not of Optimizer; read by __setstate__
    Optimizer.__setstate__(outer, shared_state(inner))
    return inner


def shared_state(inner: Optimizer) -> Dict[str, Any]:
    """What an outer optimizer shares with its inner one: its very ``defaults``, ``state`` and groups."""
    return {"defaults": inner.defaults, "state": inner.state, "param_groups": inner.param_groups}


def add_checked_group(inner: Optimizer, param_group: Dict[str, Any], check: Callable[[dict], None]) -> None:
    """``inner.add_param_group(param_group)``, undone if ``check`` rejects the new group."""
    inner.add_param_group(param_group)
    try:
        check(inner.param_groups[-1])
    except Exception:
        inner.param_groups.pop()
        raise


class ChainedParamTransformingOptimizer(ParamTransformingOptimizer):
    r"""Compose parameter-transforming optimizers around one inner optimizer.

    Given ``Opt1, Opt2, ..., OptN`` (classes or ``functools.partial`` of
    them, whose keyword arguments become per-class defaults), a step applies
    ``Opt1``'s pre-step transform, then ``Opt2``'s, ..., then ``OptN``'s to each
    gradient, steps with ``InnerOpt``, and applies the post-step transforms in
    the same order. The chained optimizers share this optimizer's
    ``state``, ``param_groups`` and ``defaults``, so their settings can be
    overridden per parameter group. The repr lists the chain as a
    composition: ``OptN ○ ... ○ Opt1 [InnerOpt](...)``.

    Args:
        *transforming_optimizers: ``ParamTransformingOptimizer`` subclasses or
            ``functools.partial`` of them, applied left to right.
        params, InnerOpt, param_ndim, grad_scale, grad_bias, defaults,
        **inner_opt_kwargs: as for :class:`ParamTransformingOptimizer`.

    Example:
        Keep the largest half of the gradient's entries, then clamp them to at most 1.5:

        >>> import torch
        >>> from functools import partial
        >>> from paramtx.optim import (
        ...     ChainedParamTransformingOptimizer, ClampedGradientOptimizer, TopQGradientOptimizer)
        >>> w = torch.zeros(4, requires_grad=True)
        >>> opt = ChainedParamTransformingOptimizer(
        ...     partial(TopQGradientOptimizer, q=0.5),
        ...     partial(ClampedGradientOptimizer, clamp_max=1.5),
        ...     params=[w], lr=1.0, param_ndim=None)
        >>> repr(opt).splitlines()[0]
        'ClampedGradientOptimizer ○ TopQGradientOptimizer [SGD]('
        >>> w.backward(gradient=torch.tensor([0.5, -1.0, 4.0, 0.25]))
        >>> opt.step()
        >>> w.grad
        tensor([ 0.0000, -1.0000,  1.5000,  0.0000])
    """

    def __init__(
        self,
        *transforming_optimizers: Any,
        params: Optional[OptimParams] = None,
        InnerOpt: InnerOptimizer = SGD,
        param_ndim: Union[int, None] = -1,
        grad_scale: float = 1,
        grad_bias: float = 0,
        defaults: Optional[Dict[str, Any]] = None,
        **inner_opt_kwargs: Any,
    ) -> None:
        api = type(self).__name__
        for position, member in enumerate(transforming_optimizers):
            if not instantiates_to(member, ParamTransformingOptimizer):
                raise TypeError(
                    f"{api}: transforming_optimizers[{position}] must be a ParamTransformingOptimizer "
                    f"subclass or a functools.partial of one, got {member!r}"
                )
        self._chain: tuple = ()
        super().__init__(
            params,
            InnerOpt,
            param_ndim=param_ndim,
            grad_scale=grad_scale,
            grad_bias=grad_bias,
            defaults=defaults,
            **inner_opt_kwargs,
        )
        with serving(api):  # the members word their messages as this optimizer
            self._chain = tuple(
                labelled(member(params, InnerOpt=self.inner_opt, defaults=self.defaults), api)
                for member in transforming_optimizers
            )
        _refuse_shadowed_settings(api, transforming_optimizers, self.defaults)

    def _prepare_step_(self) -> None:
        for member in self._chain:
            member._prepare_step_()

    def _pre_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        for member in self._chain:
            member._pre_step_transform_(param=param, optim_group=optim_group)

    def _post_step_transform_(self, param: torch.Tensor, optim_group: Dict[str, Any]) -> None:
        for member in self._chain:
            member._post_step_transform_(param=param, optim_group=optim_group)

    def _transforms(self, hook: str) -> bool:
        if getattr(type(self), hook) is not getattr(ChainedParamTransformingOptimizer, hook):
            return True  # a subclass replaced the chain's loop
        return any(member._transforms(hook) for member in self._chain)

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        super()._check_param_group(group)
        for member in self._chain:
            member._check_param_group(group)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        if "inner_opt" in state:  # unpickling or copying this optimizer
            super().__setstate__(state)
            return
        self.inner_opt.__setstate__(state)
        shared = shared_state(self.inner_opt)
        for member in self._chain:
            member.__setstate__(shared)
        Optimizer.__setstate__(self, shared)

    def _display_name(self) -> str:
        return " ○ ".join(type(member).__name__ for member in reversed(self._chain))


def _refuse_shadowed_settings(api: str, members: tuple, settings: Dict[str, Any]) -> None:
    """Chained optimizers share one set of group settings: two members giving one setting
    different values would leave one of them silently unused."""
    given: Dict[str, tuple[str, Any]] = {}
    for member in members:
        if not isinstance(member, functools.partial):
            continue
        name = member.func.__name__
        for key, value in member.keywords.items():
            if key not in settings:
                continue  # an attribute of the member (div_by_zero_eps, generator), not a shared setting
            if key in given and not _same(given[key][1], value):
                other, first = given[key]
                raise ValueError(
                    f"{api}: {other} and {name} both set {key!r} ({first!r} and {value!r}), but chained "
                    f"optimizers share one set of parameter-group settings, so one value would be lost; "
                    f"give {key}=... once, to {api} or to one member (or per parameter group), or chain "
                    f"optimizers that read different settings"
                )
            given.setdefault(key, (name, value))


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except (RuntimeError, TypeError):  # tensors, or values without a plain ==
        return False