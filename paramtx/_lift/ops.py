"""What a per-datum op is: its maths, written once, and what the lift needs to know.

An op maps the data of a tensor, given as the rows of an ``(N, D)`` matrix (a
``(D,)`` vector under the vmap reference), to new data. It does not write
anything: it returns a :class:`Result`, a description of its output (``x /
d``, "zeros with these values at these indices", ...) that the lift
materializes either as a new tensor (the pure transforms) or into the input's
own memory (the torch.optim shims). Both forms run the same kernels in the same
order, so they agree bit for bit; the in-place form is never a second spelling.

Two kinds of op:

* :class:`DatumOp`: any computation on the rows (top-q's top-k, the L1 ball's
  sort). ``elementwise=True`` declares that each element is its own datum
  (sign, clamp, a Frank-Wolfe step): the lift then runs it on the tensor as it
  is, whatever ``param_ndim`` and its layout. ``ieee=True`` declares that IEEE
  arithmetic already turns a NaN or inf input into a non-finite output, so the
  lift need not enforce the NaN policy.
* :class:`NormOp`: an op that reduces the datum only through one Lp norm, and
  is elementwise given that norm (normalize, the L2 ball). The lift computes the
  norm (scale-safely, see :mod:`paramtx._lift.numerics`); a datum split across
  the ranks of a DTensor then needs one all-reduce of partial norms, not a gather.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import torch

from paramtx._lift.dtensor import transforms_active


class Result:
    """The output of an op on some rows, not yet written anywhere.

    ``witness``, where an op can give one for free, is a small tensor of some
    elements of each datum among which is every NaN or inf the datum holds (e.g.
    its largest magnitudes: non-finite values sort above all others). The lift
    then checks it, not the whole input, for the numerics policy.
    """

    witness: Optional[torch.Tensor] = None

    def materialize(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """A new tensor of ``dtype`` (``out=None``), or the result written into ``out``."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, eq=False)
class Scaled(Result):
    """``data / factor`` (``divide=True``) or ``data * factor``, one broadcasting kernel."""

    data: torch.Tensor
    factor: Union[torch.Tensor, float]
    divide: bool = False

    def materialize(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        kernel = torch.div if self.divide else torch.mul
        if out is None:
            return kernel(self.data, self.factor).to(dtype)
        return kernel(self.data, self.factor, out=out)


@dataclasses.dataclass(frozen=True, eq=False)
class Scattered(Result):
    """Zeros of the shape of ``like``, with ``values`` at ``index`` along the last dim."""

    like: torch.Tensor
    index: torch.Tensor
    values: torch.Tensor
    witness: Optional[torch.Tensor] = None

    def materialize(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        if out is not None:
            return out.zero_().scatter_(-1, self.index, self.values.to(out.dtype))
        base = torch.zeros_like(self.like, dtype=dtype)
        if transforms_active():  # vmap has a batching rule for scatter, not for scatter_
            return base.scatter(-1, self.index, self.values.to(dtype))
        return base.scatter_(-1, self.index, self.values.to(dtype))


@dataclasses.dataclass(frozen=True, eq=False)
class Combined(Result):
    """``a * wa + b * wb``, each product rounded to the output's dtype before the sum."""

    a: torch.Tensor
    wa: Union[torch.Tensor, float]
    b: torch.Tensor
    wb: Union[torch.Tensor, float]

    def materialize(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        second = (self.b * self.wb).to(dtype)
        if out is None:
            return (self.a * self.wa).to(dtype) + second
        return torch.mul(self.a, self.wa, out=out).add_(second)


@dataclasses.dataclass(frozen=True, eq=False)
class Mapped(Result):
    """``kernel(*args)`` for a torch function that also takes ``out=``."""

    kernel: Callable[..., torch.Tensor]
    args: tuple

    def materialize(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        if out is None:
            return self.kernel(*self.args).to(dtype)
        return self.kernel(*self.args, out=out)


@dataclasses.dataclass(frozen=True, eq=False)
class Dense(Result):
    """A result already computed in full (for ops whose maths needs whole rows at once)."""

    value: torch.Tensor
    witness: Optional[torch.Tensor] = None

    def materialize(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        if out is None:
            return self.value.to(dtype)
        return out.copy_(self.value)


@dataclasses.dataclass(frozen=True)
class DatumOp:
    """A per-datum op: ``compute(x, *others, **options) -> Result`` on rows ``(..., D)``.

    Attributes:
        name: for messages and the tests' registry.
        compute: the maths, for data along the last dim (``others`` are further
            inputs of the shape of ``x``, e.g. the direction of a Frank-Wolfe step).
        elementwise: each element is its own datum (``param_ndim`` has no effect).
        ieee: IEEE arithmetic alone maps a NaN or inf input to a non-finite output.
    """

    name: str
    compute: Callable[..., Result]
    elementwise: bool = False
    ieee: bool = False


@dataclasses.dataclass(frozen=True)
class NormOp:
    """A per-datum op that reduces the datum only through its Lp norm.

    Attributes:
        name: for messages and the tests' registry.
        order: ``order(**options)``, the norm's ``p`` (``1 <= p <= inf``).
        finish: ``finish(y, norm, scale, **options) -> Result``, elementwise, where
            ``y = x * scale`` with ``scale`` a power of two per datum (a tensor),
            or ``1.0`` (then ``y`` is ``x``), chosen by the lift so that
            ``norm = ||y||_p`` neither underflows nor overflows: ``x = y / scale``.
    """

    name: str
    order: Callable[..., float]
    finish: Callable[..., Result]


Op = Union[DatumOp, NormOp]
