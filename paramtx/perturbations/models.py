"""Perturbation models: the modules whose parameters an attack solves for.

``PerturbationModel`` (the protocol a solver needs) and ``AdditivePerturbation``
(``x -> x + delta``), with rai-toolbox 0.2.1's names and signatures.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["PerturbationModel", "AdditivePerturbation"]


@runtime_checkable
class PerturbationModel(Protocol):
    """What :func:`paramtx.perturbations.gradient_ascent` needs of a perturbation model.

    A callable mapping a batch of data to the perturbed batch (same shape, data
    not modified in place) whose ``parameters()`` are what the solver's
    optimizer updates. Structural: any ``torch.nn.Module`` with such a
    ``forward`` qualifies (rai-toolbox's perturbation models too).

    Example:
        >>> import torch
        >>> from paramtx.perturbations import AdditivePerturbation, PerturbationModel
        >>> isinstance(AdditivePerturbation((2, 3)), PerturbationModel)
        True
        >>> isinstance(lambda data: data, PerturbationModel)    # no parameters()
        False
    """

    def __call__(self, data: Tensor) -> Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


def _delta_shape(api: str, shape: Sequence[int], delta_ndim: object) -> tuple:
    """The trailing dims of ``shape`` that the perturbation spans (``delta_ndim`` as rai-toolbox reads it)."""
    if delta_ndim is None:
        return tuple(shape)
    if isinstance(delta_ndim, bool) or not isinstance(delta_ndim, numbers.Integral):
        raise TypeError(
            f"{api}: delta_ndim must be an int or None, got {delta_ndim!r} (type {type(delta_ndim).__name__})"
        )
    delta_ndim = int(delta_ndim)
    if abs(delta_ndim) > len(shape):
        raise ValueError(
            f"{api}: delta_ndim must satisfy |delta_ndim| <= {len(shape)} (the data's number of dims, "
            f"shape {tuple(shape)}), got {delta_ndim}"
        )
    # k >= 0 keeps the last k dims; -k drops the first k (a perturbation shared across them)
    dropped = len(shape) - delta_ndim if delta_ndim >= 0 else -delta_ndim
    return tuple(shape)[dropped:]


class AdditivePerturbation(nn.Module):
    r"""Perturb data by adding a learnable tensor: ``x -> x + delta``.

    ``delta`` (a ``Parameter``, zeros unless ``init_fn`` fills it) has the
    shape of the data, or, with ``delta_ndim``, only its trailing dims: a
    perturbation shared by ("universal" to) the leading dims, added by
    broadcasting. Scope: per element; which elements form one datum is the
    optimizer's ``param_ndim``, e.g. ``-1`` for one perturbation per example.

    Args:
        data_or_shape: the data (whose dtype, device and layout ``delta``
            takes) or its shape.
        init_fn: fills the zero ``delta`` in place, called as
            ``init_fn(delta, **init_fn_kwargs)`` under ``torch.no_grad()``, e.g.
            :func:`paramtx.perturbations.uniform_like_l2_n_ball_` for a random
            start. ``None`` keeps zeros.
        device: overrides the data's device.
        dtype: overrides the data's dtype.
        delta_ndim: ``k >= 0``: ``delta`` spans the last ``k`` dims of the
            data; ``-k``: all but the first ``k``; ``None``: all of them.
        **init_fn_kwargs: passed to ``init_fn`` (a ``TypeError`` without one).

    Example:
        One perturbation per example, started at random in the L2 ball of radius 1:

        >>> import torch
        >>> from paramtx.perturbations import AdditivePerturbation, uniform_like_l2_n_ball_
        >>> data = torch.ones(3, 2, 2)
        >>> model = AdditivePerturbation(data, uniform_like_l2_n_ball_, epsilon=1.0,
        ...                              generator=torch.Generator().manual_seed(0))
        >>> model.delta.shape, bool((model.delta.flatten(1).norm(dim=1) <= 1.0).all())
        (torch.Size([3, 2, 2]), True)
        >>> torch.equal(model(data), data + model.delta)
        True

        One perturbation shared by the batch:

        >>> AdditivePerturbation(data, delta_ndim=-1).delta.shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        data_or_shape: Union[Tensor, Sequence[int]],
        init_fn: Optional[Callable[..., None]] = None,
        *,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
        delta_ndim: Optional[int] = None,
        **init_fn_kwargs: Any,
    ) -> None:
        api = type(self).__name__
        super().__init__()
        if isinstance(data_or_shape, Tensor):
            shape: Sequence[int] = data_or_shape.shape
            like: Dict[str, Any] = {
                "dtype": data_or_shape.dtype, "device": data_or_shape.device, "layout": data_or_shape.layout
            }
        else:
            try:
                shape = tuple(int(size) for size in data_or_shape)
            except TypeError:
                raise TypeError(
                    f"{api}: data_or_shape must be a Tensor or a sequence of ints, got {data_or_shape!r:.100} "
                    f"(type {type(data_or_shape).__name__})"
                ) from None
            like = {}
        if init_fn is not None and not callable(init_fn):
            raise TypeError(f"{api}: init_fn must be callable or None, got {init_fn!r:.100}")
        if init_fn is None and init_fn_kwargs:
            raise TypeError(f"{api}: init_fn arguments {sorted(init_fn_kwargs)} were given without an init_fn")
        if device is not None:
            like["device"] = device
        if dtype is not None:
            like["dtype"] = dtype
        self.delta = nn.Parameter(torch.zeros(_delta_shape(api, shape, delta_ndim), **like))
        if init_fn is not None:
            with torch.no_grad():  # an in-place fill of a leaf that requires grad
                init_fn(self.delta, **init_fn_kwargs)

    def forward(self, data: Tensor) -> Tensor:
        """``data + delta`` (broadcast); ``data`` is left as it is."""
        return data + self.delta
