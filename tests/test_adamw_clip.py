"""``adamw`` is ``torch.optim.AdamW``, ``clip_by_global_norm`` is ``torch.nn.utils.clip_grad_norm_``
(scale-safe, NaN out for any non-finite input), ``add_decayed_weights`` is an L2 penalty's gradient;
each under vmap over an ensemble, compiled without a break, and checkpointed.

(The shared battery, ``test_battery.py``, also drives them through every tree kind,
dtype, ``None`` leaves, purity and ``torch.func.grad``: see ``transforms_registry.py``.)
"""

from __future__ import annotations

import io
import math

import optree
import pytest
import torch

import paramtx as ptx
from ptx_testing import assert_trees_equal, randn, run_steps

SHAPES = [(3, 4), (5,), (), (2, 2, 2)]
STEPS = 20
NO_GRAD = {(3, 1), (7, 1), (0, 3), (1, 3), (12, 2)}  # (step, leaf): torch skips those


def _grads(step: int, dtype: torch.dtype) -> list:
    return [None if (step, i) in NO_GRAD else randn(shape, dtype, seed=1000 + 10 * step + i) for i, shape in enumerate(SHAPES)]


def _against_torch(torch_optimizer, tx, dtype, schedule=None):
    torch_params = [randn(shape, dtype, seed=i, scale=0.5).requires_grad_(True) for i, shape in enumerate(SHAPES)]
    params = [p.detach().clone() for p in torch_params]
    optimizer = torch_optimizer(torch_params)
    scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = tx.init(params)
    for step in range(STEPS):
        grads = _grads(step, dtype)
        for p, g in zip(torch_params, grads):
            p.grad = None if g is None else g.clone()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        updates, state = tx.update(grads, state, params)
        params = ptx.apply_updates(params, updates)
        for i, (mine, reference) in enumerate(zip(params, torch_params)):
            assert mine.dtype == dtype
            # AdamW scales p by (1 - lr wd) in place, then steps; paramtx adds one update:
            # the same products, rounded in another order (an ulp or so per step, within
            # assert_close's float32/float64 defaults over 20 steps)
            torch.testing.assert_close(mine, reference.detach(), msg=lambda m: f"step {step}, leaf {i}: {m}")


@pytest.mark.parametrize("weight_decay", [1e-2, 0.3])
def test_adamw_equals_torch_adamw_over_20_steps(weight_decay, dtype):
    _against_torch(
        lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay),
        ptx.adamw(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay),
        dtype,
    )


def test_adamw_defaults_are_torchs(dtype):
    _against_torch(lambda ps: torch.optim.AdamW(ps), ptx.adamw(), dtype)


def test_adamw_with_a_schedule_equals_torch_adamw_with_a_lambda_lr():
    schedule = ptx.warmup_cosine_decay_schedule(0.0, 0.05, 4, STEPS)
    _against_torch(
        lambda ps: torch.optim.AdamW(ps, lr=1.0, weight_decay=0.1),
        ptx.adamw(lr=schedule, weight_decay=0.1),
        torch.float64,
        schedule=lambda t: float(schedule(t)),
    )


def test_adamw_mask_is_param_groups_without_decay():
    # decay on matrices only: torch's two param groups, one with weight_decay=0
    def decayed(params):
        return [p.ndim >= 2 for p in params]

    _against_torch(
        lambda ps: torch.optim.AdamW(
            [{"params": [p for p in ps if p.ndim >= 2]}, {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0}],
            lr=0.05,
            weight_decay=0.2,
        ),
        ptx.adamw(lr=0.05, weight_decay=0.2, mask=decayed),
        torch.float64,
    )


def test_adamw_keeps_half_precision_leaves_in_their_dtype():
    params = {"w": randn((4, 3), torch.bfloat16, seed=1), "s": randn((), torch.bfloat16, seed=2)}
    tx = ptx.adamw(lr=torch.tensor(0.01), weight_decay=ptx.constant_schedule(0.1))
    outputs, state, new_params = run_steps(tx, [{"w": randn((4, 3), torch.bfloat16, seed=3), "s": randn((), torch.bfloat16, seed=4)}], params)
    assert all(u.dtype == torch.bfloat16 for u in outputs[0].values())
    assert all(p.dtype == torch.bfloat16 for p in new_params.values())


# ----------------------------------------------------------------------------- clip_by_global_norm


def _torch_clip(grads: list, max_norm: float) -> list:
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params]


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0], ids=["clips", "clips a little", "does not clip"])
def test_clip_by_global_norm_equals_torch_clip_grad_norm(max_norm, dtype):
    grads = [randn(shape, dtype, seed=7 + i) for i, shape in enumerate(SHAPES)]
    ours, _ = ptx.clip_by_global_norm(max_norm).update(grads, ptx.EmptyState())
    # the same per-tensor norms, then the norm of the norms; reductions may sum in
    # another order: an ulp of the factor (assert_close's dtype defaults)
    torch.testing.assert_close(ours, _torch_clip(grads, max_norm))
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    expected = min(1.0, max_norm / (total + 1e-6))
    torch.testing.assert_close(ours, [g * expected for g in grads])


def test_clip_by_global_norm_is_scale_safe():
    # float32 data of norm ~1e30 would overflow a sum of squares, of norm ~1e-30 underflow it
    for scale in (1e30, 1e-30):
        grads = [randn((8,), seed=1, scale=scale), randn((3, 3), seed=2, scale=scale)]
        ours, _ = ptx.clip_by_global_norm(1.0).update(grads, ptx.EmptyState())
        wanted_norm = min(1.0, math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads)))
        got_norm = math.sqrt(sum(float((u.double() ** 2).sum()) for u in ours))
        assert got_norm == pytest.approx(wanted_norm, rel=1e-5)  # float32 rounding of the factor


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_gradient_anywhere_makes_every_update_nan(bad):
    grads = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, bad])}
    ours, _ = ptx.clip_by_global_norm(1.0).update(grads, ptx.EmptyState())
    assert all(torch.isnan(u).all() for u in ours.values())
    if not math.isnan(bad):
        # torch, for an inf, zeroes the finite elements: a finite step out of a
        # non-finite gradient, which paramtx never takes
        reference = _torch_clip(list(grads.values()), 1.0)
        assert (reference[0] == 0).all()


def test_clip_by_global_norm_of_zeros_none_and_empty_leaves():
    grads = {"z": torch.zeros(3), "n": None, "e": torch.zeros(0, 2)}
    ours, _ = ptx.clip_by_global_norm(1.0).update(grads, ptx.EmptyState())
    assert_trees_equal(ours, {"z": torch.zeros(3), "n": None, "e": torch.zeros(0, 2)})
    assert ptx.clip_by_global_norm(1.0).update({}, ptx.EmptyState())[0] == {}


def test_clip_by_global_norm_accumulates_half_precision_in_float32():
    # 4096 elements of 8 in float16: a float16 sum of squares would overflow (262144 > 65504)
    grads = [torch.full((4096,), 8.0, dtype=torch.float16)]
    ours, _ = ptx.clip_by_global_norm(1.0).update(grads, ptx.EmptyState())
    assert ours[0].dtype == torch.float16
    torch.testing.assert_close(ours[0], torch.full((4096,), 8.0 / 512.0, dtype=torch.float16))


# ----------------------------------------------------------------------------- add_decayed_weights


def test_add_decayed_weights_then_sgd_is_sgd_with_weight_decay(dtype):
    params = [randn(shape, dtype, seed=i) for i, shape in enumerate(SHAPES)]
    grads = [[randn(shape, dtype, seed=50 + 10 * k + i) for i, shape in enumerate(SHAPES)] for k in range(5)]
    chained = ptx.chain(ptx.add_decayed_weights(0.05), ptx.sgd(0.1, momentum=0.9))
    reference = ptx.sgd(0.1, momentum=0.9, weight_decay=0.05)
    # g + wd p: one fused add in sgd, the same add here; then the same step
    ours, theirs = run_steps(chained, grads, params), run_steps(reference, grads, params)
    assert_trees_equal((ours[0], ours[2]), (theirs[0], theirs[2]))  # updates and params (the states differ in shape)


def test_add_decayed_weights_adds_the_decay_where_the_mask_says():
    params = {"w": torch.tensor([[1.0, -2.0]]), "b": torch.tensor([4.0])}
    grads = {"w": torch.tensor([[0.5, 0.5]]), "b": torch.tensor([0.5])}
    tx = ptx.add_decayed_weights(0.25, mask=lambda p: {k: v.ndim == 2 for k, v in p.items()})
    updates, _ = tx.update(grads, tx.init(params), params)
    assert_trees_equal(updates, {"w": torch.tensor([[0.75, 0.0]]), "b": torch.tensor([0.5])})


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ptx.adamw(lr=-1.0), ValueError, "adamw: lr must satisfy 0 <= lr, got -1.0"),
        (lambda: ptx.adamw(betas=(0.9, 1.0)), ValueError, r"adamw: betas\[1\] must satisfy 0 <= betas\[1\] < 1, got 1.0"),
        (lambda: ptx.adamw(weight_decay=-0.1), ValueError, "adamw: weight_decay must satisfy 0 <= weight_decay, got -0.1"),
        (lambda: ptx.adamw(mask={"w": 1}), TypeError, "adamw: mask must be a pytree of bools or a function of the params, got 1 at leaf w"),
        (lambda: ptx.clip_by_global_norm(-1.0), ValueError, "clip_by_global_norm: max_norm must satisfy 0 <= max_norm, got -1.0"),
        (lambda: ptx.clip_by_global_norm(math.nan), ValueError, "clip_by_global_norm: max_norm must not be NaN, got nan"),
        (lambda: ptx.add_decayed_weights("0.1"), TypeError, "add_decayed_weights: weight_decay must be a real number"),
    ],
)
def test_bad_arguments_are_named_in_the_error(build, error, message):
    with pytest.raises(error, match="^" + message):
        build()


def test_a_decay_without_params_is_a_value_error():
    with pytest.raises(ValueError, match="^add_decayed_weights: this transform needs params"):
        ptx.add_decayed_weights(0.1).update([torch.ones(1)], ptx.EmptyState())
    with pytest.raises(ValueError, match="^adamw: this transform needs params"):
        tx = ptx.adamw()
        tx.update([torch.ones(1)], tx.init([torch.ones(1)]))


# ----------------------------------------------------------------------------- ensembles, compile, checkpoints

NEW = {
    "adamw": lambda: ptx.adamw(0.05, weight_decay=0.1),
    "adamw_masked": lambda: ptx.adamw(0.05, weight_decay=0.1, mask={"w": True, "b": False}),
    "clip_by_global_norm": lambda: ptx.clip_by_global_norm(1.0),
    "add_decayed_weights": lambda: ptx.add_decayed_weights(0.1, mask={"w": True, "b": False}),
}


def _tree(seed: int) -> dict:
    return {"w": randn((4, 3), seed=seed), "b": randn((3,), seed=seed + 1)}


@pytest.mark.parametrize("name", sorted(NEW))
def test_vmap_over_an_ensemble_equals_a_loop_over_its_members(name):
    members, tx = 4, NEW[name]()
    params = [_tree(10 * m) for m in range(members)]
    grads = [[_tree(100 + 10 * k + m) for m in range(members)] for k in range(3)]
    stacked = optree.tree_map(lambda *xs: torch.stack(xs), *params)
    state = torch.func.vmap(tx.init)(stacked)
    for k in range(3):
        updates, state = torch.func.vmap(tx.update)(optree.tree_map(lambda *xs: torch.stack(xs), *grads[k]), state, stacked)
        stacked = ptx.apply_updates(stacked, updates)
    for m in range(members):
        _, _, alone = run_steps(tx, [grads[k][m] for k in range(3)], params[m])
        # the same kernels over a batch dim; the global norm may take its (exact) scaled path
        torch.testing.assert_close(optree.tree_map(lambda x: x[m], stacked), alone, rtol=1e-6, atol=1e-7)


def test_the_update_traces_to_one_graph_without_breaks():
    # every new transform in one chain (each trace costs seconds on 2 cores)
    tx = ptx.chain(*(NEW[name]() for name in sorted(NEW)))
    params = _tree(0)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(tx.update)(_tree(1), tx.init(params), params)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", sorted(NEW))
def test_state_round_trips_through_torch_save_and_load(name):
    tx = NEW[name]()
    _, state, params = run_steps(tx, [_tree(k) for k in range(2)], _tree(50))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer)  # weights_only by default
    assert_trees_equal(restored, state)
    assert_trees_equal(tx.update(_tree(9), restored, params), tx.update(_tree(9), state, params))
