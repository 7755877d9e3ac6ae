"""The ``dq`` randomness of ``top_q`` and ``lmo_l1q``: explicit, reproducible, resumable, private, traced."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import paramtx as ptx
from paramtx._transforms import sparsity
from ptx_testing import assert_trees_equal, randn

D = 1000  # elements per datum: q is then readable from the kept count to within 1/(2D)
FACTORIES = {
    "top_q": lambda seed: ptx.top_q(0.5, dq=0.4, param_ndim=None, seed=seed),
    "lmo_l1q": lambda seed: ptx.lmo_l1q(0.5, dq=0.4, param_ndim=None, seed=seed),
}


def _grads(steps: int) -> list:
    return [{"a": randn((D,), seed=2 * k), "b": randn((10, 100), seed=2 * k + 1)} for k in range(steps)]


def _run(tx, grads, state=None):
    state = tx.init(None) if state is None else state
    outputs = []
    for g in grads:
        updates, state = tx.update(g, state)
        outputs.append(updates)
    return outputs, state


def _kept(updates) -> list[int]:
    return [int((updates[name] != 0).sum()) for name in sorted(updates)]


@pytest.mark.parametrize("name", FACTORIES)
def test_same_seed_gives_the_same_draws(name):
    grads = _grads(5)
    first, _ = _run(FACTORIES[name](3), grads)
    second, _ = _run(FACTORIES[name](3), grads)
    assert_trees_equal(first, second)


@pytest.mark.parametrize("name", FACTORIES)
def test_different_seeds_give_different_draws(name):
    grads = _grads(5)
    kept = {seed: [_kept(u) for u in _run(FACTORIES[name](seed), grads)[0]] for seed in (0, 1, 2)}
    # with q uniform on [0.1, 0.9] and D = 1000, two streams agreeing on all 10
    # kept counts would be a (deterministic) coincidence of probability ~1e-25
    assert kept[0] != kept[1] and kept[1] != kept[2] and kept[0] != kept[2]
    # and within one stream the level is redrawn per step and per leaf
    assert len({k for step in kept[0] for k in step}) > 5


@pytest.mark.parametrize("save", ["deepcopy", "torch_save", "torch_save_weights_only"])
@pytest.mark.parametrize("name", FACTORIES)
def test_a_state_saved_mid_run_and_restored_continues_the_same_sequence(name, save):
    grads = _grads(6)
    tx = FACTORIES[name](9)
    straight, _ = _run(tx, grads)
    _, middle = _run(tx, grads[:3])
    if save == "deepcopy":
        restored = copy.deepcopy(middle)
    else:
        buffer = io.BytesIO()
        torch.save(middle, buffer)
        buffer.seek(0)
        # torch.load's default weights_only=True must accept paramtx's state types
        # (registered as safe globals by the package), not only an unsafe load
        restored = torch.load(buffer, weights_only=(save == "torch_save_weights_only"))
    assert_trees_equal(restored, middle)
    resumed, _ = _run(FACTORIES[name](9), grads[3:], state=restored)
    assert_trees_equal(resumed, straight[3:])


@pytest.mark.parametrize("name", FACTORIES)
def test_the_global_rng_is_untouched_and_has_no_influence(name):
    grads = _grads(3)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    first, _ = _run(FACTORIES[name](4), grads)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(98765)
    torch.rand(17)  # move the global stream
    second, _ = _run(FACTORIES[name](4), grads)
    assert_trees_equal(first, second)


@given(
    q=st.floats(0.0, 1.0),
    dq=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**63 - 1),
    count=st.integers(0, 2**62),
    size=st.integers(0, 20),
)
def test_drawn_levels_lie_in_the_clipped_interval(q, dq, seed, count, size):
    drawn = sparsity.levels(q, dq, torch.tensor(seed), torch.tensor(count), size)
    if dq == 0.0:
        assert drawn is None  # the level is q itself
        return
    assert drawn is not None and drawn.shape == (size,) and drawn.dtype == torch.float64
    low, high = max(0.0, q - dq), min(1.0, q + dq)
    assert bool(((drawn >= low) & (drawn <= high)).all())


def _reference_hash32(seed: int, count: int, index: int) -> int:
    """The draw's hash in plain Python integers: what every device must compute."""

    def mix(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    h = mix((index & 0xFFFFFFFF) ^ 0x9E3779B9)
    for word in (count & 0xFFFFFFFF, count >> 32, seed & 0xFFFFFFFF, seed >> 32):
        h = mix(h ^ word)
    return h


@given(seed=st.integers(0, 2**63 - 1), count=st.integers(0, 2**63 - 1), size=st.integers(1, 8))
def test_the_tensor_hash_is_exact_integer_arithmetic(seed, count, size):
    # Exact integer arithmetic (no int64 overflow on the way) is what makes the draws
    # the same on every device: compare with Python's unbounded integers.
    index = torch.arange(size)
    got = sparsity.hash32(torch.tensor(seed), torch.tensor(count), index).tolist()
    assert got == [_reference_hash32(seed, count, i) for i in range(size)]


def test_the_draws_are_uniform():
    # 20000 draws (200 steps of 100 leaves) against the uniform law: a
    # Kolmogorov-Smirnov statistic below 0.0115 holds with probability 0.99; the
    # hash is deterministic, so this either always holds or never does.
    seed = torch.tensor(12345)
    draws = torch.cat([sparsity.uniforms(seed, torch.tensor(k), 100) for k in range(200)]).sort().values
    n = draws.numel()
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    statistic = torch.maximum(grid - draws, draws - (grid - 1 / n)).max().item()
    assert statistic < 1.63 / n**0.5


@pytest.mark.parametrize("q, dq", [(0.5, 0.4), (0.1, 0.3), (0.9, 0.5), (0.0, 1.0)], ids=str)
def test_kept_counts_follow_q_drawn_in_the_clipped_interval(q, dq):
    tx = ptx.top_q(q, dq=dq, param_ndim=None, seed=21)
    low, high = max(0.0, q - dq), min(1.0, q + dq)
    state = tx.init(None)
    fractions = []
    for k in range(30):
        updates, state = tx.update([randn((D,), seed=k)], state)
        kept = int((updates[0] != 0).sum())
        # kept = round((1 - q') D) with q' in [low, high]
        assert round((1 - high) * D) <= kept <= round((1 - low) * D)
        fractions.append(1 - kept / D)
    # the draws spread over the interval (uniform: 30 draws cover most of it)
    assert max(fractions) - min(fractions) > 0.5 * (high - low)


def test_each_leaf_gets_its_own_draw_per_step():
    tx = ptx.top_q(0.5, dq=0.5, param_ndim=None, seed=8)
    updates, _ = tx.update([randn((D,), seed=k) for k in range(6)], tx.init(None))
    assert len({int((u != 0).sum()) for u in updates}) > 3


def test_dq_zero_keeps_q_fixed_whatever_the_seed():
    grads = _grads(3)
    a, _ = _run(ptx.top_q(0.3, dq=0.0, param_ndim=None, seed=1), grads)
    b, _ = _run(ptx.top_q(0.3, dq=0.0, param_ndim=None, seed=2), grads)
    assert_trees_equal(a, b)
    assert _kept(a[0]) == [700, 700]


def test_dq_draws_work_under_func_vmap_with_the_default_randomness_mode():
    # the draw is not a torch random op, so vmap's default randomness="error" accepts it
    tx = ptx.top_q(0.5, dq=0.4, param_ndim=None, seed=6)
    g = torch.stack([randn((D,), seed=k) for k in range(3)])
    out, _ = torch.func.vmap(lambda x: tx.update(x, tx.init(None)), out_dims=(0, None))(g)
    expected = torch.stack([tx.update(g[k], tx.init(None))[0] for k in range(3)])
    assert torch.equal(out, expected)
