"""Per-leaf step counters, for transforms whose maths depends on a leaf's step index."""

from __future__ import annotations

from typing import Any

import torch

from paramtx import _tree


def zeros_like_params(params: Any) -> Any:
    """A 0-d int64 zero on each parameter's device (``None`` for ``None``)."""
    leaves, spec = _tree.flatten(params)
    return _tree.unflatten(
        spec,
        [None if p is None else torch.zeros((), dtype=torch.int64, device=p.device) for p in leaves],
    )


def advanced(api: str, counts: Any, updates: Any) -> Any:
    """Counts plus one where the update is not ``None``."""
    leaves, spec = _tree.flatten(updates)
    count_leaves = _tree.leaves_like(api, spec, counts, "state")
    return _tree.unflatten(
        spec,
        [c if u is None else c + 1 for c, u in zip(count_leaves, leaves)],
    )
