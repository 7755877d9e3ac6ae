"""Schedules and ``inject_hyperparams``: values, hyperparameters as tensors in the state,
one compilation over steps whose learning rate changes, ensembles, checkpoints."""

from __future__ import annotations

import io
import math
import pickle

import optree
import pytest
import torch
from torch._dynamo.utils import counters

import paramtx as ptx
from ptx_testing import assert_trees_equal, randn

# inductor's own imports use a deprecated torch.jit API
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

STEPS = 20


def values(schedule, steps: int = STEPS) -> list[float]:
    return [float(schedule(torch.tensor(t))) for t in range(steps)]


# ----------------------------------------------------------------------------- schedule values


def test_constant_schedule_is_its_value_at_every_step():
    assert values(ptx.constant_schedule(0.25)) == [0.25] * STEPS


def test_linear_schedule_is_the_closed_form():
    init, end, steps, begin = 1.0, 0.2, 7, 3
    want = [end + (init - end) * (1 - min(max(t - begin, 0), steps) / steps) for t in range(STEPS)]
    # the same float64 operations in another order: a few ulps
    assert values(ptx.linear_schedule(init, end, steps, begin)) == pytest.approx(want, rel=1e-15, abs=1e-15)
    assert values(ptx.linear_schedule(init, end, 0)) == [init] * STEPS  # no transition: optax's constant


def test_linear_schedule_equals_torch_linear_lr():
    base, start, end, total = 0.5, 0.1, 1.0, 8
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=end, total_iters=total)
    reference = []
    for _ in range(STEPS):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # torch updates the lr multiplicatively step by step: rounding of ~1e-15 per step
    assert values(ptx.linear_schedule(base * start, base * end, total)) == pytest.approx(reference, rel=1e-12)


def test_cosine_decay_schedule_equals_torch_cosine_annealing_over_its_half_period():
    base, eta_min, t_max = 0.3, 0.03, 12
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    reference = []
    for _ in range(t_max + 1):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = values(ptx.cosine_decay_schedule(base, t_max, alpha=eta_min / base), t_max + 1)
    # torch's recursive form accumulates ~1e-16 relative rounding per step
    assert ours == pytest.approx(reference, rel=1e-12)
    # and it stays at the floor after the decay
    assert values(ptx.cosine_decay_schedule(base, t_max, alpha=eta_min / base))[t_max:] == pytest.approx(
        [eta_min] * (STEPS - t_max), rel=1e-15
    )


def test_cosine_decay_schedule_exponent_is_the_closed_form():
    schedule = ptx.cosine_decay_schedule(2.0, 10, alpha=0.1, exponent=3.0)
    want = [2.0 * (0.9 * (0.5 * (1 + math.cos(math.pi * min(t, 10) / 10))) ** 3 + 0.1) for t in range(STEPS)]
    assert values(schedule) == pytest.approx(want, rel=1e-14)


def test_warmup_cosine_decay_schedule_warms_up_linearly_then_decays_to_its_end_value():
    init, peak, warmup, total, end = 0.01, 1.0, 4, 14, 0.1
    schedule = ptx.warmup_cosine_decay_schedule(init, peak, warmup, total, end_value=end)
    got = values(schedule)
    warm = [init + (peak - init) * t / warmup for t in range(warmup)]
    decay = [end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) for t in range(warmup, total)]
    assert got == pytest.approx(warm + decay + [end] * (STEPS - total), rel=1e-14)
    assert got[warmup] == pytest.approx(peak, rel=1e-15)


def test_exponential_decay_equals_torch_exponential_lr():
    base, gamma = 0.4, 0.8
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    reference = []
    for _ in range(STEPS):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # torch multiplies step by step, paramtx takes the power: ~1e-16 relative per step
    assert values(ptx.exponential_decay(base, 1, gamma)) == pytest.approx(reference, rel=1e-13)


def test_exponential_decay_staircase_begin_and_end_value():
    schedule = ptx.exponential_decay(1.0, 3, 0.5, transition_begin=2, staircase=True, end_value=0.2)
    want = [1.0 if t <= 2 else max(0.2, 0.5 ** ((t - 2) // 3)) for t in range(STEPS)]
    assert values(schedule) == want
    growing = ptx.exponential_decay(1.0, 1, 2.0, end_value=5.0)  # a rate above 1 is bounded above
    assert values(growing)[:5] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_join_schedules_restarts_each_schedule_at_its_boundary():
    schedule = ptx.join_schedules(
        [ptx.linear_schedule(0.0, 1.0, 2), ptx.constant_schedule(5.0), ptx.linear_schedule(1.0, 0.0, 4)], [2, 5]
    )
    assert values(schedule, 11) == [0.0, 0.5, 5.0, 5.0, 5.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_a_schedule_takes_an_int_or_a_tensor_count_and_keeps_the_device():
    schedule = ptx.warmup_cosine_decay_schedule(0.0, 1.0, 3, 10)
    for t in range(12):
        assert float(schedule(t)) == float(schedule(torch.tensor(t)))
    value = schedule(torch.tensor(4))
    assert value.shape == () and value.dtype == torch.float64


def test_a_schedule_vmaps_over_counts_and_compiles_once_over_them():
    schedule = ptx.warmup_cosine_decay_schedule(0.1, 1.0, 3, 10, end_value=0.05)
    counts = torch.arange(STEPS)
    expected = torch.stack([schedule(c) for c in counts])
    assert_trees_equal(torch.func.vmap(schedule)(counts), expected)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(schedule, fullgraph=True, backend="eager")
    got = torch.stack([compiled(c) for c in counts])
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "schedule",
    [
        ptx.constant_schedule(0.1),
        ptx.linear_schedule(1.0, 0.0, 5, transition_begin=2),
        ptx.cosine_decay_schedule(1.0, 5, alpha=0.1),
        ptx.warmup_cosine_decay_schedule(0.0, 1.0, 2, 8),
        ptx.exponential_decay(1.0, 2, 0.5, staircase=True),
    ],
    ids=repr,
)
def test_a_schedule_pickles_and_prints_as_the_call_that_built_it(schedule):
    restored = pickle.loads(pickle.dumps(schedule))
    assert repr(restored) == repr(schedule) and repr(schedule).startswith(
        ("constant_schedule(", "linear_schedule(", "cosine_decay_schedule(", "warmup_cosine_decay_schedule(", "exponential_decay(")
    )
    assert values(restored) == values(schedule)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ptx.constant_schedule("0.1"), "constant_schedule: value must be a real number, got '0.1'"),
        (lambda: ptx.linear_schedule(1.0, 0.0, 4, transition_begin=-1), "linear_schedule: transition_begin must satisfy transition_begin >= 0, got -1"),
        (lambda: ptx.linear_schedule(1.0, 0.0, 2.5), "linear_schedule: transition_steps must be an int, got 2.5"),
        (lambda: ptx.cosine_decay_schedule(1.0, 0), "cosine_decay_schedule: decay_steps must satisfy decay_steps >= 1, got 0"),
        (lambda: ptx.warmup_cosine_decay_schedule(0.0, 1.0, 5, 5), "warmup_cosine_decay_schedule: decay_steps .* must satisfy decay_steps > warmup_steps, got decay_steps=5, warmup_steps=5"),
        (lambda: ptx.exponential_decay(1.0, 2, 0.0), "exponential_decay: decay_rate must satisfy 0 < decay_rate, got 0.0"),
        (lambda: ptx.exponential_decay(1.0, 2, math.nan), "exponential_decay: decay_rate must not be NaN, got nan"),
        (lambda: ptx.join_schedules([ptx.constant_schedule(1.0)], [3]), r"join_schedules: boundaries must hold one int fewer than schedules \(0\), got \[3\]"),
        (lambda: ptx.join_schedules([ptx.constant_schedule(1.0), 2.0], [3]), "join_schedules: schedules\\[1\\] must be callable, got 2.0"),
        (lambda: ptx.join_schedules([ptx.constant_schedule(1.0)] * 3, [4, 2]), r"join_schedules: boundaries must be non-decreasing, got \[4, 2\]"),
    ],
)
def test_bad_schedule_arguments_are_named_in_the_error(build, message):
    with pytest.raises((TypeError, ValueError), match="^" + message):
        build()


# ----------------------------------------------------------------------------- inject_hyperparams


def test_injected_numbers_become_0d_tensors_in_the_params_precision():
    tx = ptx.inject_hyperparams(ptx.adam)(lr=0.1, eps=1e-8)
    for dtype, want in [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float64, torch.float64)]:
        state = tx.init({"w": torch.zeros(2, dtype=dtype)})
        assert set(state.hyperparams) == {"lr", "eps"}
        for value in state.hyperparams.values():
            assert value.shape == () and value.dtype == want
        # (an eps of 1e-8 would be 0 in float16)
        assert state.hyperparams["eps"] > 0
    assert state.count.dtype == torch.int64 and int(state.count) == 0
    assert tx.init({"w": torch.zeros(1)}).hyperparams["lr"].item() == pytest.approx(0.1)
    explicit = ptx.inject_hyperparams(ptx.sgd, hyperparam_dtype=torch.float64)(lr=0.1)
    assert explicit.init(torch.zeros(1, dtype=torch.bfloat16)).hyperparams["lr"].dtype == torch.float64


def test_only_the_arguments_given_are_injected():
    # (defaults stay as they are: sgd's weight_decay=0 keeps it from needing params)
    tx = ptx.inject_hyperparams(ptx.sgd)(0.1, momentum=0.9)
    state = tx.init([torch.zeros(2)])
    assert list(state.hyperparams) == ["lr"]  # momentum decides the state's shape: never injected
    updates, _ = tx.update([torch.ones(2)], state)
    torch.testing.assert_close(updates[0], torch.full((2,), -0.1))


def test_a_caller_changes_a_hyperparameter_between_steps():
    lrs = [0.1, 0.5, 0.02, 0.3]
    params = {"w": randn((3, 2), seed=1), "b": randn((2,), seed=2)}
    grads = [{"w": randn((3, 2), seed=10 + k), "b": randn((2,), seed=20 + k)} for k in range(len(lrs))]
    tx = ptx.inject_hyperparams(ptx.sgd)(lr=lrs[0], momentum=0.9)
    reference_state = ptx.sgd(lr=1.0, momentum=0.9).init(params)
    state = tx.init(params)
    for lr, g in zip(lrs, grads):
        state = state._replace(hyperparams={"lr": torch.tensor(lr)})
        updates, state = tx.update(g, state, params)
        want, reference_state = ptx.sgd(lr=lr, momentum=0.9).update(g, reference_state, params)
        # a float32 lr against a Python float: one rounding of the lr
        torch.testing.assert_close(updates, want, rtol=1e-6, atol=0)
    assert int(state.count) == len(lrs)


def test_sgd_with_a_schedule_equals_torch_sgd_with_a_lambda_lr():
    schedule = ptx.warmup_cosine_decay_schedule(0.0, 0.2, 3, 15, end_value=0.01)
    params = [randn((4, 3), torch.float64, seed=1), randn((3,), torch.float64, seed=2)]
    torch_params = [p.clone().requires_grad_(True) for p in params]
    optimizer = torch.optim.SGD(torch_params, lr=1.0, momentum=0.9, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: float(schedule(t)))
    tx = ptx.sgd(lr=schedule, momentum=0.9, weight_decay=0.01)
    assert isinstance(tx.init(params), ptx.InjectHyperparamsState)
    state = tx.init(params)
    for step in range(STEPS):
        grads = [randn(p.shape, torch.float64, seed=100 + 7 * step + i) for i, p in enumerate(params)]
        for p, g in zip(torch_params, grads):
            p.grad = g.clone()
        optimizer.step()
        scheduler.step()
        updates, state = tx.update(grads, state, params)
        params = ptx.apply_updates(params, updates)
        # float64 on both sides; LambdaLR multiplies the schedule by the base lr 1.0
        torch.testing.assert_close(params, [p.detach() for p in torch_params], rtol=1e-12, atol=1e-14)


def test_a_tensor_lr_gives_the_number_lrs_result():
    params = [randn((5,), torch.float64, seed=3)]
    grads = [[randn((5,), torch.float64, seed=30 + k)] for k in range(5)]
    for tx_number, tx_tensor in [
        (ptx.adam(0.05, weight_decay=0.1), ptx.adam(torch.tensor(0.05, dtype=torch.float64), weight_decay=torch.tensor(0.1, dtype=torch.float64))),
        (ptx.sgd(0.05, momentum=0.5), ptx.sgd(torch.tensor(0.05, dtype=torch.float64), momentum=0.5)),
    ]:
        a, b = tx_number.init(params), tx_tensor.init(params)
        for g in grads:
            u_number, a = tx_number.update(g, a, params)
            u_tensor, b = tx_tensor.update(g, b, params)
            # float64 throughout; a fused add(alpha=) against a product then a sum: an ulp
            torch.testing.assert_close(u_tensor, u_number, rtol=1e-15, atol=1e-17)


def test_the_learning_rate_is_differentiable_through_an_update():
    # a tensor hyperparameter is an input like any other: torch.func.grad gives d(loss)/d(lr)
    p, g = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 0.25], dtype=torch.float64)

    def loss(lr):
        tx = ptx.sgd(lr=lr, momentum=0.9)
        updates, _ = tx.update(g, tx.init(p), p)
        return (ptx.apply_updates(p, updates) ** 2).sum()

    # d/dlr sum((p - lr g)^2) = -2 g.(p - lr g)
    lr = torch.tensor(0.1, dtype=torch.float64)
    torch.testing.assert_close(torch.func.grad(loss)(lr), -2 * (g * (p - lr * g)).sum())


def test_an_ensemble_trains_with_one_learning_rate_per_member():
    # the hyperparameters are state: vmap gives each member its own
    members, lrs = 4, torch.tensor([0.01, 0.1, 0.3, 1.0])
    tx = ptx.inject_hyperparams(ptx.adamw)(lr=0.1, weight_decay=0.05)
    params = [{"w": randn((3, 2), seed=m), "b": randn((2,), seed=10 + m)} for m in range(members)]
    grads = [[{"w": randn((3, 2), seed=100 + 10 * k + m), "b": randn((2,), seed=200 + 10 * k + m)} for m in range(members)] for k in range(3)]
    stacked = optree.tree_map(lambda *xs: torch.stack(xs), *params)
    state = torch.func.vmap(tx.init)(stacked)
    state = state._replace(hyperparams={**state.hyperparams, "lr": lrs})
    for k in range(3):
        updates, state = torch.func.vmap(tx.update)(optree.tree_map(lambda *xs: torch.stack(xs), *grads[k]), state, stacked)
        stacked = ptx.apply_updates(stacked, updates)
    for m in range(members):
        alone, single = params[m], ptx.adamw(lr=float(lrs[m]), weight_decay=0.05)
        s = single.init(alone)
        for k in range(3):
            u, s = single.update(grads[k][m], s, alone)
            alone = ptx.apply_updates(alone, u)
        # the same kernels batched; the lr as a float32 tensor against a Python float
        torch.testing.assert_close(optree.tree_map(lambda x: x[m], stacked), alone, rtol=1e-6, atol=1e-7)


# (factory, the hyperparameter, a value, whether update needs params): every factory whose
# step size, epsilon, q, weight decay (or eps, max_norm) may be a schedule
SCHEDULABLE = [
    (ptx.sgd, "lr", 0.1, False),
    (ptx.sgd, "weight_decay", 0.05, True),
    (ptx.adam, "lr", 0.1, False),
    (ptx.adam, "eps", 1e-3, False),
    (ptx.adamw, "weight_decay", 0.2, True),
    (ptx.add_decayed_weights, "weight_decay", 0.2, True),
    (ptx.clip_by_global_norm, "max_norm", 0.5, False),
    (ptx.scale, "step_size", -0.3, False),
    (ptx.normalize, "eps", 10.0, False),
    (ptx.top_q, "q", 0.5, False),
    (ptx.lmo_l1q, "q", 0.5, False),
    (lambda **kw: ptx.chain(ptx.lmo_l2(), ptx.frank_wolfe(**kw)), "epsilon", 0.7, True),
    (lambda **kw: ptx.chain(ptx.lmo_linf(), ptx.frank_wolfe(epsilon=0.5, use_default_lr_schedule=False, **kw)), "lr", 0.3, True),
    (lambda **kw: ptx.projected(ptx.project_l2_ball, **kw), "epsilon", 0.4, True),
    (lambda **kw: ptx.projected(ptx.project_box, lower=-0.1, **kw), "upper", 0.2, True),
]


def _injected_state(state):
    """The InjectHyperparamsState in ``state`` (it may be inside a chain's tuple)."""
    found = optree.tree_leaves(state, is_leaf=lambda x: isinstance(x, ptx.InjectHyperparamsState), none_is_leaf=True)
    return next(s for s in found if isinstance(s, ptx.InjectHyperparamsState))


@pytest.mark.parametrize(
    "factory, name, value, needs_params",
    SCHEDULABLE,
    ids=[
        "sgd-lr", "sgd-weight_decay", "adam-lr", "adam-eps", "adamw-weight_decay", "add_decayed_weights",
        "clip_by_global_norm", "scale", "normalize-eps", "top_q", "lmo_l1q", "frank_wolfe-epsilon", "frank_wolfe-lr",
        "projected-epsilon", "projected-upper",
    ],
)
def test_a_constant_schedule_gives_what_the_number_gives(factory, name, value, needs_params):
    params = {"w": randn((3, 4), torch.float64, seed=1), "b": randn((4,), torch.float64, seed=2)}
    grads = [{"w": randn((3, 4), torch.float64, seed=10 + k), "b": randn((4,), torch.float64, seed=20 + k)} for k in range(3)]
    scheduled, plain = factory(**{name: ptx.constant_schedule(value)}), factory(**{name: value})
    s, p = scheduled.init(params), plain.init(params)
    assert name in _injected_state(s).hyperparams
    for g in grads:
        u_scheduled, s = scheduled.update(g, s, params if needs_params else None)
        u_plain, p = plain.update(g, p, params if needs_params else None)
        # float64 params: the value as a float64 tensor against a Python float; a fused
        # add(alpha=) against a product then a sum: an ulp
        torch.testing.assert_close(u_scheduled, u_plain, rtol=1e-15, atol=1e-17)


def _compile_counter():
    calls = []

    def backend(gm, example_inputs):
        calls.append(gm)
        return gm.forward

    return backend, calls


@pytest.mark.parametrize("how", ["schedule", "caller"])
def test_a_compiled_step_with_a_changing_learning_rate_compiles_once_over_20_steps(how):
    schedule = ptx.warmup_cosine_decay_schedule(0.0, 0.1, 5, STEPS)
    if how == "schedule":
        tx = ptx.chain(ptx.clip_by_global_norm(1.0), ptx.adamw(lr=schedule, weight_decay=0.01))
    else:
        tx = ptx.chain(ptx.clip_by_global_norm(1.0), ptx.inject_hyperparams(ptx.adamw)(lr=0.1, weight_decay=0.01))
    params = {"w": randn((4, 3), seed=1), "b": randn((3,), seed=2)}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return ptx.apply_updates(params, updates), state

    backend, compiles = _compile_counter()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    eager_params, eager_state = params, tx.init(params)
    state, lrs = tx.init(params), []
    for k in range(STEPS):
        grads = {"w": randn((4, 3), seed=50 + k), "b": randn((3,), seed=80 + k)}
        if how == "caller":  # the caller sets a new lr at every step
            lr = torch.tensor(0.1 / (k + 1))
            state = (state[0], state[1]._replace(hyperparams={**state[1].hyperparams, "lr": lr}))
            eager_state = (eager_state[0], eager_state[1]._replace(hyperparams={**eager_state[1].hyperparams, "lr": lr}))
        params, state = compiled(params, state, grads)
        eager_params, eager_state = step(eager_params, eager_state, grads)
        lrs.append(float(state[1].hyperparams["lr"]))
    assert len(set(lrs)) == STEPS  # the lr did change at every step
    assert len(compiles) == 1 and counters["stats"]["unique_graphs"] == 1
    # Compiled, the clip's norm accumulates in float64 (see paramtx._lift.numerics): the
    # same numbers as eager up to float32 rounding (assert_close's float32 default tolerance)
    torch.testing.assert_close(params, eager_params)


def test_scheduled_q_epsilon_and_step_size_compile_once_over_20_steps():
    # the per-datum families: a shrinking budget and a sparsity level that moves every step
    tx = ptx.chain(
        ptx.top_q(q=ptx.linear_schedule(0.1, 0.9, STEPS)),
        ptx.normalize(2),
        ptx.scale(ptx.exponential_decay(-0.5, 1, 0.9)),
        ptx.projected(ptx.project_l2_ball, epsilon=ptx.cosine_decay_schedule(2.0, STEPS, alpha=0.1)),
    )
    params = {"w": randn((4, 3), seed=1), "b": randn((3,), seed=2)}
    backend, compiles = _compile_counter()
    torch._dynamo.reset()
    compiled = torch.compile(tx.update, fullgraph=True, backend=backend)
    state, eager_state = tx.init(params), tx.init(params)
    for k in range(STEPS):
        grads = {"w": randn((4, 3), seed=50 + k), "b": randn((3,), seed=80 + k)}
        updates, state = compiled(grads, state, params)
        want, eager_state = tx.update(grads, eager_state, params)
        # compiled norms accumulate in float64: float32 rounding apart
        torch.testing.assert_close(updates, want)
    assert len(compiles) == 1


def test_injected_state_round_trips_through_torch_save_and_load():
    tx = ptx.chain(ptx.sgd(lr=ptx.cosine_decay_schedule(0.1, 10), momentum=0.9), ptx.inject_hyperparams(ptx.clip_by_global_norm)(2.0))
    params = {"w": randn((3,), seed=1)}
    state = tx.init(params)
    for k in range(3):
        _, state = tx.update({"w": randn((3,), seed=10 + k)}, state, params)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = torch.load(buffer)  # weights_only: the state types are allowlisted
    assert_trees_equal(restored, state)
    assert type(restored[0]) is ptx.InjectHyperparamsState
    grads = {"w": randn((3,), seed=99)}
    assert_trees_equal(tx.update(grads, restored, params), tx.update(grads, state, params))


def test_a_scheduled_transform_pickles_and_prints_as_its_call():
    tx = ptx.sgd(lr=ptx.linear_schedule(0.1, 0.0, 10), momentum=0.9)
    assert repr(tx) == "sgd(lr=linear_schedule(0.1, 0.0, 10), momentum=0.9)"
    injected = ptx.inject_hyperparams(ptx.adam, static_args=("eps",))(lr=0.1, eps=1e-6)
    assert repr(injected) == "inject_hyperparams(adam)(lr=0.1, eps=1e-06)"
    for built in (tx, injected):
        restored = pickle.loads(pickle.dumps(built))
        assert repr(restored) == repr(built)
        params = [torch.ones(2)]
        assert_trees_equal(restored.update([torch.ones(2)], restored.init(params), params), built.update([torch.ones(2)], built.init(params), params))
    assert list(injected.init([torch.ones(1)]).hyperparams) == ["lr"]  # eps is static


def test_a_factory_that_declares_no_hyperparameters_has_its_numbers_and_callables_injected():
    def shifted_scale(step_size, shift=0.0, name="x"):
        return _scale_by(step_size, shift)

    tx = ptx.inject_hyperparams(shifted_scale, static_args=("shift",))(ptx.linear_schedule(1.0, 0.0, 2), shift=0.5, name="y")
    state = tx.init(torch.zeros(1))
    assert list(state.hyperparams) == ["step_size"]
    out = []
    for _ in range(3):
        u, state = tx.update(torch.ones(1), state)
        out.append(float(u))
    assert out == [1.5, 1.0, 0.5]


def _scale_by(step_size, shift):
    def update(u, s, p=None):
        return u * step_size + shift, s

    return ptx.GradientTransformation(lambda p: ptx.EmptyState(), update)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ptx.sgd(lr=-0.1), ValueError, "sgd: lr must satisfy 0 <= lr, got -0.1"),
        (lambda: ptx.sgd(lr="0.1"), TypeError, "sgd: lr must be a real number, a 0-d floating-point tensor or a schedule, got '0.1'"),
        (lambda: ptx.sgd(lr=torch.ones(2)), TypeError, r"sgd: lr must be a real number or a 0-d floating-point tensor, got a tensor of shape \(2,\)"),
        (lambda: ptx.adam(eps=torch.tensor(1)), TypeError, "adam: eps must be a real number or a 0-d floating-point tensor, got a tensor of shape"),
        (lambda: ptx.sgd(lr=ptx.linear_schedule(-1.0, 0.0, 3)), ValueError, "sgd: lr must satisfy 0 <= lr, got -1.0"),
        (lambda: ptx.sgd(lr=lambda t: torch.ones(2)), TypeError, r"inject_hyperparams\(sgd\): the schedule for lr must return a 0-d real tensor or a number"),
        (lambda: ptx.sgd(lr=ptx.constant_schedule(0.1), momentum=lambda t: 0.9), TypeError, "sgd: momentum must be a real number, got"),
        (lambda: ptx.inject_hyperparams(ptx.sgd)(lr=0.1, beta=3), TypeError, r"inject_hyperparams\(sgd\): got an unexpected keyword argument 'beta'"),
        (lambda: ptx.inject_hyperparams(3), TypeError, "inject_hyperparams: factory must be callable, got 3"),
        (lambda: ptx.inject_hyperparams(ptx.sgd, static_args=[1]), TypeError, r"inject_hyperparams: static_args must be names \(str\), got 1"),
        (lambda: ptx.inject_hyperparams(ptx.sgd, hyperparam_dtype=torch.int32), TypeError, "inject_hyperparams: hyperparam_dtype must be a floating-point torch.dtype or None, got torch.int32"),
    ],
)
def test_bad_hyperparameters_are_named_in_the_error(build, error, message):
    with pytest.raises(error, match="^" + message):
        build()


def test_an_out_of_range_tensor_hyperparameter_makes_the_step_nan():
    # (its value is not read on the host: the policy for tensor settings is NaN out)
    p = torch.ones(2)
    for tx in (ptx.sgd(lr=torch.tensor(-0.1)), ptx.adam(eps=torch.tensor(0.0)), ptx.clip_by_global_norm(torch.tensor(math.nan))):
        updates, _ = tx.update(torch.ones(2), tx.init(p), p)
        assert torch.isnan(updates).all(), tx


def test_a_wrong_state_for_an_injected_transform_is_a_value_error():
    tx = ptx.inject_hyperparams(ptx.sgd)(lr=0.1)
    state = tx.init(torch.zeros(1))
    with pytest.raises(ValueError, match=r"^inject_hyperparams\(sgd\): state must be the InjectHyperparamsState"):
        tx.update(torch.ones(1), ptx.EmptyState())
    with pytest.raises(ValueError, match=r"^inject_hyperparams\(sgd\): state.hyperparams must be a dict of the hyperparameters \['lr'\]"):
        tx.update(torch.ones(1), state._replace(hyperparams={"learning_rate": torch.tensor(0.1)}))
    with pytest.raises(TypeError, match=r"^inject_hyperparams\(sgd\): state.hyperparams\['lr'\] must be a 0-d floating-point tensor, got 0.1"):
        tx.update(torch.ones(1), state._replace(hyperparams={"lr": 0.1}))


def test_a_scheduled_chain_runs_in_the_torch_optim_shim_and_its_state_dict_round_trips():
    from paramtx.optim import GradientTransformationOptimizer

    tx = ptx.chain(
        ptx.clip_by_global_norm(1.0),
        ptx.multi_transform(
            {"matrix": ptx.adamw(lr=ptx.cosine_decay_schedule(0.1, 10)), "vector": ptx.sgd(0.1, momentum=0.9)},
            lambda p: ["matrix" if x.ndim > 1 else "vector" for x in p],
        ),
    )

    def run(optimizer, params, steps):
        for k in range(steps):
            for p in params:
                p.grad = randn(p.shape, seed=300 + k)
            optimizer.step()

    params = [torch.nn.Parameter(randn((3, 2), seed=1)), torch.nn.Parameter(randn((2,), seed=2))]
    optimizer = GradientTransformationOptimizer(params, tx)
    run(optimizer, params, 3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = GradientTransformationOptimizer(copies, tx)
    resumed.load_state_dict(torch.load(buffer))
    run(optimizer, params, 2)
    run(resumed, copies, 2)
    assert_trees_equal([p.detach() for p in copies], [p.detach() for p in params])
