"""What kind of tensor the lift holds: a DTensor, or one under a ``torch.func`` transform.

DTensors are recognised without importing ``torch.distributed.tensor`` (it
costs half a second): if nobody has imported that module, no tensor can be one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeGuard

import torch

if TYPE_CHECKING:  # not at run time: see the module doc
    from torch.distributed.tensor import DTensor

_DTENSOR_MODULE = "torch.distributed.tensor"


def is_dtensor(x: Any) -> TypeGuard[DTensor]:
    """Whether ``x`` is a ``DTensor``."""
    module = sys.modules.get(_DTENSOR_MODULE)
    return module is not None and isinstance(x, module.DTensor)


def local_tensor(x: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (``x`` itself otherwise): what memory checks look at."""
    return x.to_local() if is_dtensor(x) else x


def same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` (for DTensors, their parts on this rank) are the same view of memory."""
    a, b = local_tensor(a), local_tensor(b)
    return a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.shape == b.shape


# torch's own check (private, but stable since torch 2.0); where it is missing, assume a
# transform may be active: that only forgoes the host-side shortcuts.
_FUNCTORCH_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


def transforms_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) is tracing: values cannot
    then be read on the host, and some in-place ops have no batching rule."""
    if torch.compiler.is_compiling():  # dynamo does not trace the check; compiled code never needs it
        return False
    return bool(_FUNCTORCH_ACTIVE())
