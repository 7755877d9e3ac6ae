"""Settings given as tensors: one value per datum, or per element, laid out by the lift.

A hyperparameter (a ball's radius, top-q's kept count, a box's bounds) may be
a Python number, the same for every datum, or a tensor of values:

* :class:`PerDatum`: a tensor broadcastable to the *batch shape* of the data,
  ``x.shape[:n - k]`` for a tensor ``x`` of ``n`` dims whose data have ``k``
  (the ``param_ndim`` rule, :func:`paramtx.to_batch`): shape ``(N,)`` for
  ``param_ndim=-1``, ``()`` for one value for all; or of shape ``(N,)``, one
  value per datum in the order of :func:`paramtx.to_batch`, whatever the batch shape.
* :class:`PerElement`: a tensor broadcastable to ``x.shape`` (torch's rule).

The lift materializes them for the form an op is run in, so that ops see
settings that broadcast against what they compute on: on the rows ``(N, D)``
a per-datum setting becomes ``(N, 1)`` and a per-element one ``(N, D)``; an
elementwise op, run on the tensor as it is, gets a per-datum setting as
``batch_shape + (1,) * k``; under the vmap reference each is vmapped along with
the data, so each call sees a 0-d (or ``(D,)``) tensor. A 0-d setting
broadcasts as it is everywhere. For a DTensor, the setting is given for the
whole logical tensor and each rank gets its block (:func:`block_of`). Shapes
are checked here, eagerly (they are known without a sync), and a misfit is a
``ValueError`` naming the API, the setting and both shapes.

Values are not checked (that would need a host sync): the front ends replace
invalid ones by NaN (:func:`paramtx._core.validate.nan_where_invalid`), and the
lift adds each setting's *poison* (-0.0, or NaN where the setting is NaN) to the
result, so a datum whose setting is NaN comes out as NaNs whatever the op does
with it (the numerics policy: NaN in, NaN out).

Ops receive settings in the dtype they were given and cast them where they
combine them with data (:func:`operand`) to the dtype a kernel casts a Python number to, so that
a tensor of settings gives, bit for bit, what a loop over the data with each
value as a number gives.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Union

import torch

from paramtx._core.validate import Bounds, nan_where_invalid
from paramtx._lift.dtensor import is_dtensor
from paramtx._lift.param_ndim import datum_ndim


@dataclasses.dataclass(frozen=True, eq=False)
class PerDatum:
    """A setting with one value per datum: a tensor broadcastable to the batch shape.

    Attributes:
        value: the values (any dtype the op accepts; ``keep`` counts are int64).
        name: the public argument, for messages.
        poison: -0.0 or NaN per value, added to the datum's result; :func:`poison_of`
            ``value`` if ``None`` and ``value`` is floating point (an integer setting derived
            from a float one, top-q's ``keep`` from ``q``, passes the float's).
    """

    value: torch.Tensor
    name: str
    poison: Optional[torch.Tensor] = None


@dataclasses.dataclass(frozen=True, eq=False)
class PerElement:
    """A setting with one value per element: a tensor broadcastable to the data's tensor."""

    value: torch.Tensor
    name: str


Wrapped = Union[PerDatum, PerElement]


def per_datum(name: str, value: Any, bounds: Optional[Bounds] = None) -> Any:
    """``value`` as an op option: a number (or ``None``) as it is; a tensor as a
    :class:`PerDatum`, NaN where outside ``bounds`` (see the module doc)."""
    if not isinstance(value, torch.Tensor):
        return value
    return PerDatum(value if bounds is None else nan_where_invalid(value, bounds), name)


def per_element(name: str, value: Any) -> Any:
    """``value`` as an op option: a number (or ``None``) as it is; a tensor as a :class:`PerElement`."""
    return PerElement(value, name) if isinstance(value, torch.Tensor) else value


def poison_of(value: torch.Tensor) -> Optional[torch.Tensor]:
    """``-0.0`` where ``value`` is finite, NaN where not (``None`` for an integer tensor).

    Added to a result, it makes NaN what a NaN or infinite setting applies to and
    leaves every other value as it is, bit for bit: ``y + (-0.0) == y`` for every
    ``y``, ``-0.0`` included (a ``+0.0`` would turn ``-0.0`` into ``+0.0``).
    """
    return value.abs() * -0.0 if value.is_floating_point() else None


def operand(setting: Any, dtype: torch.dtype) -> Any:
    """A materialized setting in ``dtype`` (a tensor), or a number as it is (kernels cast numbers themselves)."""
    return setting.to(dtype) if isinstance(setting, torch.Tensor) and setting.dtype != dtype else setting


def spread(options: dict) -> bool:
    """Whether any option is a :class:`PerDatum` or :class:`PerElement` setting of more than one value."""
    return any(isinstance(value, (PerDatum, PerElement)) and value.value.dim() > 0 for value in options.values())


def has_tensors(options: dict) -> bool:
    """Whether any option is a :class:`PerDatum` or :class:`PerElement` setting."""
    for value in options.values():  # (a plain loop: every op call on every path asks)
        if value.__class__ is PerDatum or value.__class__ is PerElement:
            return True
    return False


class Laid:
    """The options of one call, laid out for one form of an op.

    Attributes:
        plain: every option, settings materialized for the rows (or elementwise) form.
        mapped_names: the settings to vmap along with the data (the vmap reference), in order.
        mapped: their values, the data along dim 0 (``(N,)``, or ``(N, D)`` per element).
        poison: the sum of the settings' poisons, laid out as ``plain``'s, or ``None``.
    """

    __slots__ = ("plain", "mapped_names", "mapped", "poison")

    def __init__(self, plain: dict, mapped_names: tuple, mapped: tuple, poison: Optional[torch.Tensor]) -> None:
        self.plain, self.mapped_names, self.mapped, self.poison = plain, mapped_names, mapped, poison


def lay_out(
    api: str, options: dict, shape: torch.Size, param_ndim: Optional[int], *, elementwise: bool, like: torch.Tensor
) -> Laid:
    """Materialize the tensor settings among ``options`` for data of ``shape``.

    ``elementwise``: for an op run on the tensor as it is (else on its rows
    ``(N, D)``). ``like``: the data (settings on another device are moved to it).
    """
    k = datum_ndim(api, shape, param_ndim)
    lead = tuple(shape[: len(shape) - k])
    n = math.prod(lead)
    d = math.prod(shape[len(shape) - k :])
    plain, names, mapped, poison = dict(options), [], [], None
    for key, setting in options.items():
        if not isinstance(setting, (PerDatum, PerElement)):
            continue
        value = setting.value
        if value.device != like.device:
            value = value.to(like.device)
        if isinstance(setting, PerDatum):
            extra = setting.poison if setting.poison is not None else poison_of(value)
            value, extra = _to_lead(api, setting.name, value, extra, lead, shape, param_ndim)
            if value.dim() == 0:
                plain[key] = value  # (broadcasts as it is, in every form)
                term = extra
            elif elementwise:
                padded = (1,) * (len(lead) - value.dim()) + tuple(value.shape) + (1,) * k
                plain[key] = value.reshape(padded)
                term = None if extra is None else extra.reshape(padded)
            else:
                rows = value.expand(lead).reshape(n, 1)
                plain[key] = rows
                names.append(key)
                mapped.append(rows.reshape(n))
                term = None if extra is None else extra.expand(lead).reshape(n, 1)
        else:
            _check_broadcast(api, setting.name, value, tuple(shape), shape, param_ndim, "the shape")
            term = poison_of(value)
            if value.dim() == 0 or elementwise:
                plain[key] = value
            else:
                rows = value.expand(shape).reshape(n, d)
                plain[key] = rows
                names.append(key)
                mapped.append(rows)
                term = None if term is None else term.expand(shape).reshape(n, d)
        if term is not None:
            poison = term if poison is None else poison + term
    return Laid(plain, tuple(names), tuple(mapped), poison)


def block_of(
    api: str, options: dict, shape: torch.Size, param_ndim: Optional[int], sizes: tuple, offset: tuple
) -> dict:
    """``options`` for the block of the data of ``shape`` that starts at ``offset`` and has
    shape ``sizes`` (a rank's part of a sharded tensor): each tensor setting cut to the values
    of that block's data (or elements). Shapes are checked as :func:`lay_out` checks them.
    """
    k = datum_ndim(api, shape, param_ndim)
    lead = tuple(shape[: len(shape) - k])
    out = dict(options)
    for key, setting in options.items():
        if not isinstance(setting, (PerDatum, PerElement)) or setting.value.dim() == 0:
            continue
        value = setting.value.full_tensor() if is_dtensor(setting.value) else setting.value
        if isinstance(setting, PerDatum):
            cut = sizes[: len(lead)], offset[: len(lead)]
            value, extra = _to_lead(api, setting.name, value, setting.poison, lead, shape, param_ndim)
            out[key] = PerDatum(_block(value, *cut), setting.name, None if extra is None else _block(extra, *cut))
        else:
            _check_broadcast(api, setting.name, value, tuple(shape), shape, param_ndim, "the shape")
            out[key] = PerElement(_block(value, sizes, offset), setting.name)
    return out


def _block(value: torch.Tensor, sizes: tuple, offset: tuple) -> torch.Tensor:
    """The part of ``value`` (broadcastable to a tensor of ``len(sizes)`` dims) over the block
    ``offset : offset + sizes`` of that tensor; dims it broadcasts along stay as they are."""
    value = value.reshape((1,) * (len(sizes) - value.dim()) + tuple(value.shape))
    for dim, (size, start) in enumerate(zip(sizes, offset)):
        if value.shape[dim] != 1:
            value = value.narrow(dim, start, size)
    return value


def _to_lead(
    api: str,
    name: str,
    value: torch.Tensor,
    extra: Optional[torch.Tensor],
    lead: tuple,
    shape: Any,
    param_ndim: Optional[int],
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A per-datum ``value`` (and its poison) made broadcastable to the batch shape ``lead``:
    as it is if it is; ``(N,)``, one per datum in order, is viewed as ``lead`` (how the
    shims' hooks, which see every tensor as ``(N, *datum)``, count data); else a ``ValueError``."""
    if _broadcasts(value, lead):
        return value, extra
    n = math.prod(lead)
    if value.dim() == 1 and value.shape[0] == n:  # (N,), or one value for the one datum of param_ndim=None
        return value.reshape(lead), None if extra is None else extra.reshape(lead)
    _check_broadcast(api, name, value, lead, shape, param_ndim, "the batch shape")
    raise AssertionError  # (unreachable: the check raised)


def _broadcasts(value: torch.Tensor, target: tuple) -> bool:
    try:
        return torch.broadcast_shapes(tuple(value.shape), target) == target
    except RuntimeError:
        return False


def _check_broadcast(
    api: str, name: str, value: torch.Tensor, target: tuple, shape: torch.Size, param_ndim: Optional[int], what: str
) -> None:
    if not _broadcasts(value, target):
        extra = f" (or of shape ({math.prod(target)},))" if what == "the batch shape" else ""
        raise ValueError(
            f"{api}: {name} must be a number or a tensor broadcastable to {what} {target}{extra} of the data "
            f"(a tensor of shape {tuple(shape)}, param_ndim={param_ndim}), got a tensor of shape {tuple(value.shape)}"
        )


def check_fits(api: str, name: str, value: Any, shape: Any, param_ndim: Optional[int], *, per: str) -> None:
    """Eagerly (no sync), that a tensor ``value`` of a setting fits data of ``shape``:
    broadcastable to their batch shape (``per="datum"``) or to ``shape`` (``per="element"``).
    A number fits anything."""
    if not isinstance(value, torch.Tensor):
        return
    if per == "datum":
        k = datum_ndim(api, shape, param_ndim)
        _to_lead(api, name, value, None, tuple(shape[: len(shape) - k]), shape, param_ndim)
    else:
        _check_broadcast(api, name, value, tuple(shape), shape, param_ndim, "the shape")
