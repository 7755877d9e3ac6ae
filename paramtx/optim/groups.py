"""One validation path for the settings of parameter groups, wherever they enter.

Settings enter an optimizer's parameter groups at construction, through
``add_param_group``, through ``load_state_dict``, and between steps (an LR
scheduler, or a user, writing into ``param_groups``). :class:`CheckedGroups`
checks a group whenever any of these changes it: at construction and
``add_param_group`` directly, after ``load_state_dict`` (restoring the previous
groups and state if the loaded ones are rejected), and at every ``step()``
before anything is written, for the groups whose settings or parameters changed
since they were last checked (a comparison of a few values per group: no
measurable cost per step).

A copy (``copy``, ``deepcopy``, ``pickle``, ``torch.save``) of such an optimizer keeps
its settings and inner optimizer, so that it steps as the original.

Messages name the class, the group, the key and the value:
``"L2ProjectedOptim (parameter group 1): epsilon must satisfy 0 < epsilon, got -1.0"``.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Dict, Iterator, Optional

import torch
from torch.optim import Optimizer

from paramtx._core import validate as _validate

# The inner optimizer's settings checked whatever the inner optimizer is: where
# torch.optim uses them they are real numbers, with these lower bounds.
INNER_SETTINGS = {"lr": 0.0, "momentum": 0.0, "dampening": None, "weight_decay": 0.0, "eps": 0.0}
_PLAIN = (int, float, str, bool, type(None))


def setting(where: str, group: Dict[str, Any], key: str) -> Any:
    """``group[key]``, or a ``ValueError`` saying that the group lacks it."""
    try:
        return group[key]
    except KeyError:
        raise ValueError(
            f"{where}: the group has no {key!r} setting (was the state dict saved by another optimizer class?)"
        ) from None


def check_inner_settings(where: str, settings: Dict[str, Any]) -> None:
    """The real-valued settings an inner torch.optim optimizer reads, where present."""
    for key, low in INNER_SETTINGS.items():
        value = settings.get(key)
        if key in settings and not isinstance(value, torch.Tensor):  # (torch.optim accepts tensor lrs)
            _validate.check_real(where, key, value, low=low)
    if "betas" in settings and not isinstance(settings["betas"], torch.Tensor):
        betas = settings["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{where}: betas must be a pair of real numbers, got {betas!r}")
        for index, beta in enumerate(betas):
            if not isinstance(beta, torch.Tensor):
                _validate.check_real(where, f"betas[{index}]", beta, low=0.0, high=1.0, high_inclusive=False)


def check_parameters(where: str, group: Dict[str, Any]) -> None:
    """Every parameter of a group is a floating-point tensor."""
    for index, param in enumerate(setting(where, group, "params")):
        if not isinstance(param, torch.Tensor) or not param.is_floating_point():
            raise TypeError(
                f"{where}: parameter {index} must be a floating-point tensor, got "
                f"{getattr(param, 'dtype', type(param).__name__)}"
            )


def _token(value: Any) -> Any:
    """What a fingerprint keeps of a setting: the value if plain, else the object's identity."""
    if isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)):
        return value
    return ("object", id(value))


def fingerprint(group: Dict[str, Any]) -> tuple:
    """The settings and parameters (identity, dtype, shape) a check of ``group`` saw."""
    settings = tuple(sorted((key, _token(value)) for key, value in group.items() if key != "params"))
    params = tuple((id(p), p.dtype, tuple(p.shape)) for p in group.get("params", ()))
    return settings, params


_SERVING: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("paramtx_serving", default=None)


@contextlib.contextmanager
def serving(name: str) -> Iterator[None]:
    """Optimizers built within this block word their messages as ``name`` (the
    optimizer they are built for: a chain's members, a shim's inner optimizer)."""
    token = _SERVING.set(name)
    try:
        yield
    finally:
        _SERVING.reset(token)


class CheckedGroups:
    """Mix into a ``torch.optim.Optimizer``: its groups' settings are checked wherever they enter.

    The optimizer defines ``_check_param_group(group)``, raising ``TypeError`` or
    ``ValueError`` (using :meth:`_where` for the message's prefix), calls
    :meth:`_check_groups` at the start of ``step()``, and ``_check_groups(force=True)``
    once its groups are built.
    """

    param_groups: list

    def _api(self) -> str:
        """The name messages start with: the class's, or that of the optimizer this one serves."""
        serving_name = None if torch.compiler.is_compiling() else _SERVING.get()  # (dynamo cannot read a ContextVar)
        return self.__dict__.get("_api_name") or serving_name or type(self).__name__

    def _where(self, group: Dict[str, Any]) -> str:
        index = next((i for i, g in enumerate(self.param_groups) if g is group), len(self.param_groups))
        return f"{self._api()} (parameter group {index})"

    def _check_param_group(self, group: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _check_groups(self, force: bool = False) -> None:
        """Check every group changed since its last check (every group if ``force``)."""
        checked: Dict[int, tuple] = self.__dict__.setdefault("_checked", {})
        for index, group in enumerate(self.param_groups):
            seen = fingerprint(group)
            if force or checked.get(index) != seen:
                self._check_param_group(group)
                checked[index] = seen
        for index in [i for i in checked if i >= len(self.param_groups)]:
            del checked[index]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """``torch.optim``'s, then a check of every group: a rejected state dict changes nothing."""
        before = {"state": self.state, "param_groups": self.param_groups}  # type: ignore[attr-defined]
        Optimizer.load_state_dict(self, state_dict)  # type: ignore[arg-type]
        try:
            self._check_groups(force=True)
            self._after_load_()
        except Exception:
            self.__setstate__(before)  # type: ignore[attr-defined]
            self._check_groups(force=True)
            raise

    def _after_load_(self) -> None:
        """What a subclass adjusts once a state dict is loaded and its groups accepted."""

    def __getstate__(self) -> Dict[str, Any]:
        """What ``copy``, ``deepcopy``, ``pickle`` and ``torch.save`` keep: everything, so that
        the copy steps as the original (its settings and inner optimizer too), but the
        methods the instance shadows: its compiled passes (rebuilt when it is restored) and
        a ``step`` an LR scheduler wrapped (that wrapper would step the original, not the copy)."""
        return {key: value for key, value in self.__dict__.items() if not (callable(value) and hasattr(type(self), key))}


def labelled(optimizer: Optimizer, name: Optional[str]) -> Optimizer:
    """Have ``optimizer`` (an inner or chained optimizer) word its messages as ``name``."""
    if name is not None and isinstance(optimizer, CheckedGroups):
        optimizer.__dict__["_api_name"] = name
    return optimizer
