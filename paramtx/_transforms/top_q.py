"""``top_q``: keep the largest-magnitude elements of each datum, zero the rest.

Also the sparsifying transform shared with :func:`paramtx.lmo_l1q`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union, cast

import torch

from paramtx._core import tree as _tree
from paramtx._core import validate as _validate
from paramtx._core.base import GradientTransformation, Params, Updates, rebuildable
from paramtx._lift import lift
from paramtx._lift.ops import DatumOp, Dense, Op, Result, Scaled, Scattered
from paramtx._lift.param_ndim import datum_size
from paramtx._lift.settings import per_datum
from paramtx._transforms import sparsity
from paramtx._transforms.inject import schedulable


class TopQState(NamedTuple):
    """The position of a top-q transform's random stream: 0-d int64 tensors.

    Attributes:
        seed: the transform's seed.
        count: how many updates have been made; step ``count`` draws its
            sparsity levels from ``(seed, count)`` (see ``dq`` in
            :func:`paramtx.top_q`), so a run resumed from a saved state draws
            the same numbers.

    Example:
        >>> import torch, paramtx as ptx
        >>> tx = ptx.top_q(q=0.5, dq=0.5, seed=7)
        >>> state = tx.init(None)
        >>> state
        TopQState(seed=tensor(7), count=tensor(0))
        >>> _, state = tx.update(torch.ones(2, 4), state)
        >>> state
        TopQState(seed=tensor(7), count=tensor(1))
    """

    seed: torch.Tensor
    count: torch.Tensor  # type: ignore[assignment]  # shadows tuple.count, as optax's states do


# Magnitudes (sign bit clear) order as their bit patterns read as integers do, NaN
# above inf as in a float topk; an integer topk skips the NaN-aware float comparisons
# and is ~10% faster on W1's rows (3072 values), ~45% on W2's (150528), on CPU.
_SAME_WIDTH_INT = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def top_indices(x: torch.Tensor, k: int, *, ordered: bool) -> torch.Tensor:
    """The indices of the ``k`` largest magnitudes along the last dim (``0 < k <= D``);
    largest first if ``ordered``, else in no particular order."""
    magnitude = x.abs()
    as_int = _SAME_WIDTH_INT.get(magnitude.dtype)
    if as_int is not None:
        magnitude = magnitude.view(as_int)
    return torch.topk(magnitude, k, dim=-1, sorted=ordered).indices


def select_largest(
    x: torch.Tensor, k: int, keep: Union[int, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``(index, largest, kept)``: where the ``k`` largest magnitudes of each datum are,
    their values (every NaN or inf of a datum is among them), and, for a drawn ``keep``
    (a tensor, at most ``k``), the mask of the first ``keep`` of them in order (else ``None``).
    """
    drawn = isinstance(keep, torch.Tensor)
    index = top_indices(x, k, ordered=drawn)
    kept = torch.arange(k, device=x.device) < keep if drawn else None
    return index, x.gather(-1, index), kept


def _top_q(x: torch.Tensor, *, keep: Union[int, torch.Tensor], bound: int) -> Result:
    k = min(bound, x.shape[-1])
    if k <= 0:  # nothing kept
        return Dense(torch.zeros_like(x))
    if isinstance(keep, int) and k >= x.shape[-1]:  # all kept (a copy on the pure path)
        return Scaled(x, 1)
    index, largest, kept = select_largest(x, k, keep)
    values = largest if kept is None else torch.where(kept, largest, 0)
    return Scattered(x, index, values, witness=largest)


TOP_Q = DatumOp("top_q", _top_q)
"""The ``keep`` largest magnitudes of each datum (an int, or an int64 tensor at most
the static ``bound``), the rest zeroed; ties broken arbitrarily, exactly ``keep`` kept."""


def sparsifying_transform(
    api: str,
    op: Op,
    *,
    q: Union[float, torch.Tensor],
    dq: float,
    param_ndim: Any,
    seed: int,
    **options: Any,
) -> GradientTransformation:
    """A transform applying ``op`` per datum with ``keep = round((1 - q) * D)``,
    and ``q`` drawn per leaf and step if ``dq > 0`` (see :mod:`paramtx._transforms.sparsity`).

    ``q`` may be a tensor of one per datum; ``options`` tensors are per-datum settings."""
    q = _validate.check_setting(api, "q", q, _validate.UNIT_INTERVAL)
    dq = _validate.check_real(api, "dq", dq, low=0.0, high=1.0)
    param_ndim = _validate.check_param_ndim_spec(api, param_ndim)
    seed = _validate.check_int(api, "seed", seed, low=0)
    if seed >= 2**63:
        raise ValueError(f"{api}: seed must satisfy seed < 2**63, got {seed!r}")

    def init_fn(params: Params) -> TopQState:
        device = _tree.first_device(_tree.tensor_leaves(api, params)[0])
        return TopQState(
            seed=torch.tensor(seed, dtype=torch.int64, device=device),
            count=torch.zeros((), dtype=torch.int64, device=device),
        )

    def update_fn(updates: Updates, state: TopQState, params: Optional[Params] = None):
        del params
        _validate.check_state(api, state, TopQState)
        leaves, spec = _tree.checked_leaves(api, updates)
        ndims = _tree.leaf_param_ndims(api, param_ndim, updates, leaves, spec)
        present = [i for i, leaf in enumerate(leaves) if leaf is not None]
        per_datum_q = isinstance(q, torch.Tensor)
        if per_datum_q:  # uniforms, each mapped onto each datum's own range
            drawn = sparsity.uniforms(state.seed, state.count, len(present)) if dq else None
        else:  # levels
            drawn = sparsity.levels(cast(float, q), dq, state.seed, state.count, len(present))
        settings = {key: per_datum(key, value, _validate.NON_NEGATIVE) for key, value in options.items()}
        out = list(leaves)
        for j, i in enumerate(present):
            leaf, ndim = leaves[i], ndims[i]
            size = datum_size(api, leaf.shape, ndim)
            draw = None if drawn is None else drawn[j]
            if per_datum_q:
                keep, bound = sparsity.keep_for(q, dq, draw, size)
            else:
                keep, bound = sparsity.kept(cast(float, q), dq, draw, size)
            out[i] = lift.map_data(api, op, ndim, leaf, keep=keep, bound=bound, **settings)
        return _tree.unflatten(spec, out), TopQState(state.seed, state.count + 1)

    return GradientTransformation(init_fn, update_fn)


@schedulable("q")
@rebuildable
def top_q(q: Union[float, torch.Tensor], dq: float = 0.0, param_ndim: Any = -1, seed: int = 0) -> GradientTransformation:
    """Keep the ``round((1 - q) * D)`` largest-magnitude elements of each datum, zero the rest.

    Scope: per datum (``D`` = elements per datum; the ``param_ndim`` rule:
    :func:`paramtx.to_batch`). Ties are broken arbitrarily but exactly
    ``round((1 - q) * D)`` elements are kept (Python's ``round``). A datum
    holding a NaN or an inf maps to NaNs.
    Sharded tensors (DTensor, e.g. FSDP2): exact; a datum split across ranks is
    gathered, computed whole and re-sharded.

    Args:
        q: the fraction of each datum to drop, in ``[0, 1]``: ``q=0.9`` keeps the top 10%.
            A tensor gives one ``q`` per datum (broadcastable to the batch shape;
            each datum is then ranked whole and masked by its own count; a datum
            whose ``q`` is NaN or outside ``[0, 1]`` comes out as NaNs).
        dq: if positive, each step draws one ``q`` per update leaf uniformly
            from ``[max(0, q - dq), min(1, q + dq)]``.
        param_ndim: which trailing dims form one datum; per leaf, a pytree of them
            or a callable ``(path, shape)`` (see :func:`paramtx.to_batch`).
        seed: seeds the ``dq`` draws, ``0 <= seed < 2**63``. The state holds
            ``(seed, count)`` as tensors and each draw is a hash of them (traced
            under ``torch.compile`` and ``torch.func``, the same on every
            device): the same seed gives the same draws, and a restored state
            continues the same sequence. The global RNG is never used.

    Example:
        >>> import torch, paramtx as ptx
        >>> g = torch.tensor([[0.5, 1.0], [-2.5, 0.3]])
        >>> tx = ptx.top_q(q=0.5, param_ndim=None)      # keep 2 of 4
        >>> updates, state = tx.update(g, tx.init(None))
        >>> updates
        tensor([[ 0.0000,  1.0000],
                [-2.5000,  0.0000]])
        >>> state
        TopQState(seed=tensor(0), count=tensor(1))
        >>> ptx.top_q(q=0.5, param_ndim=1).update(g, state)[0]   # 1 of 2 per row
        tensor([[ 0.0000,  1.0000],
                [-2.5000,  0.0000]])
        >>> ptx.top_q(q=torch.tensor([0.0, 0.5])).update(g, state)[0]   # one q per row
        tensor([[ 0.5000,  1.0000],
                [-2.5000,  0.0000]])
    """
    return sparsifying_transform("top_q", TOP_Q, q=q, dq=dq, param_ndim=param_ndim, seed=seed)
