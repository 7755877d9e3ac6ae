"""What real training does to an optimizer: settings that enter after construction,
copies and checkpoints of the whole optimizer, LR schedulers, hooks, and clear errors
for what does not fit. One test per case that once went wrong."""

from __future__ import annotations

import copy
import io
import math
import pickle
from functools import partial

import pytest
import torch

import paramtx as ptx
import paramtx.optim as pto
from paramtx.optim.generic import TX_STATE
from ptx_testing import DEVICE, randn
from shims_registry import SHIMS, ShimEntry, starting_point


def _x(*shape):
    return torch.zeros(*shape or (2, 3), requires_grad=True)


def _build(entry: ShimEntry, params):
    return entry.build(params, **({"lr": 0.1} if entry.inner_kwargs else {}))


# ----------------------------------------------------------------------------- settings wherever they enter


@pytest.mark.parametrize(
    "make, key, value",
    [
        (lambda ps: pto.TopQGradientOptimizer(ps, q=0.5, lr=0.1), "q", 2.0),
        (lambda ps: pto.L2ProjectedOptim(ps, epsilon=1.0, lr=0.1), "epsilon", -1.0),
        (lambda ps: pto.L1qFrankWolfe(ps, q=0.5, epsilon=1.0), "q", 1.5),
        (lambda ps: pto.ClampedParameterOptimizer(ps, clamp_min=-1.0, clamp_max=1.0, lr=0.1), "clamp_min", 2.0),
        (lambda ps: pto.L2NormedGradientOptim(ps, lr=0.1), "lr", float("nan")),
    ],
    ids=["q=2", "epsilon=-1", "L1qFrankWolfe q=1.5", "clamp_min>clamp_max", "lr=nan"],
)
def test_load_state_dict_rejects_bad_settings_and_changes_nothing(make, key, value):
    x = _x()
    optimizer = make([x])
    saved = optimizer.state_dict()
    saved["param_groups"][0][key] = value
    before = copy.deepcopy(optimizer.param_groups[0])
    with pytest.raises(ValueError, match=rf"\(parameter group 0\): {key}"):
        optimizer.load_state_dict(saved)
    assert {k: v for k, v in optimizer.param_groups[0].items() if k != "params"} == {
        k: v for k, v in before.items() if k != "params"
    }
    assert optimizer.param_groups[0]["params"][0] is x


def test_another_classs_state_dict_is_refused_when_loaded_not_at_the_step():
    source = pto.TopQGradientOptimizer([_x()], q=0.5, lr=0.1)
    target = pto.L2ProjectedOptim([_x()], epsilon=1.0, lr=0.1)
    with pytest.raises(ValueError, match=r"L2ProjectedOptim \(parameter group 0\): the group has no 'epsilon'"):
        target.load_state_dict(source.state_dict())
    assert target.param_groups[0]["epsilon"] == 1.0


def test_a_scheduler_pushing_a_frank_wolfe_lr_out_of_range_fails_the_step_before_it_writes():
    x = torch.nn.Parameter(torch.zeros(4, 3))
    optimizer = pto.L2FrankWolfe([x], epsilon=1.0, lr=0.6, use_default_lr_schedule=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 5.0 if epoch else 1.0)
    x.grad = randn((4, 3), seed=1)
    optimizer.step()
    scheduler.step()  # lr = 3.0: outside [0, 1], where Frank-Wolfe leaves the ball
    params, grads = x.detach().clone(), x.grad.clone()
    x.grad = randn((4, 3), seed=2)
    grads = x.grad.clone()
    with pytest.raises(ValueError, match=r"^L2FrankWolfe \(parameter group 0\): lr must satisfy 0 <= lr <= 1, got 3.0"):
        optimizer.step()
    assert torch.equal(x.detach(), params) and torch.equal(x.grad, grads)  # nothing written


def test_settings_changed_by_hand_between_steps_are_checked_at_the_next_step():
    x = _x()
    optimizer = pto.L2ProjectedOptim([x], epsilon=1.0, lr=0.1)
    x.grad = torch.ones(2, 3)
    optimizer.step()
    optimizer.param_groups[0]["epsilon"] = float("inf")
    before = x.detach().clone()
    with pytest.raises(ValueError, match=r"epsilon must be finite, got inf"):
        optimizer.step()
    assert torch.equal(x.detach(), before)


def test_a_parameter_whose_dtype_changes_is_refused_at_the_step():
    x = torch.zeros(4, 3)
    optimizer = pto.L2ProjectedOptim([x], epsilon=1.0, lr=0.1)
    x.data = torch.zeros(4, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"L2ProjectedOptim \(parameter group 0\): parameter 0 must be a floating-point tensor, got torch.int64"):
        optimizer.step()


@pytest.mark.parametrize(
    "build, fragments",
    [
        (lambda: pto.L2ProjectedOptim([_x()], epsilon=math.inf), ["epsilon must be finite", "inf"]),
        (lambda: pto.L2ProjectedOptim([_x()], epsilon=1.0, lr=math.inf), ["lr must be finite", "inf"]),
        (lambda: pto.SignedGradientOptim([_x()], lr=float("nan")), ["lr must not be NaN"]),
        (lambda: pto.SignedGradientOptim([_x()], lr=True), ["lr must be a real number", "True"]),
        (lambda: pto.SignedGradientOptim([_x()], lr="0.1"), ["lr must be a real number", "'0.1'"]),
        (lambda: pto.ParamTransformingOptimizer([_x()], grad_scale=math.inf), ["grad_scale must be finite"]),
        (lambda: pto.L2ProjectedOptim([_x()], epsilon=1.0, weight_decay=math.inf), ["weight_decay must be finite"]),
        (lambda: pto.FrankWolfe([_x()], lmo_scaling_factor=-math.inf), ["lmo_scaling_factor must be finite"]),
        (lambda: ptx.scale(math.inf), ["scale: step_size must be finite"]),
        (lambda: ptx.sgd(0.1, weight_decay=math.inf), ["sgd: weight_decay must be finite"]),
        (lambda: ptx.adam(lr=math.inf), ["adam: lr must be finite"]),
        (lambda: ptx.project_l2_ball(torch.ones(2), math.inf), ["project_l2_ball: epsilon must be finite"]),
        (lambda: ptx.adam(eps=0.0), ["adam: eps must satisfy 0 < eps"]),
    ],
    ids=str,
)
def test_non_finite_and_boolean_numbers_are_refused_everywhere(build, fragments):
    with pytest.raises((ValueError, TypeError)) as caught:
        build()
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))


def test_zero_rates_and_zero_guards_give_no_step_not_nan():
    x = torch.nn.Parameter(torch.ones(3))
    x.grad = torch.tensor([1.0, 0.0, -1.0])
    pto.FrankWolfe([x], lr=0.0, div_by_zero_eps=0.0).step()  # once a ZeroDivisionError
    assert torch.equal(x.detach(), torch.ones(3))
    tx = ptx.frank_wolfe(1.0, lr=0.0, eps=0.0)
    update, _ = tx.update(torch.zeros(3), tx.init(torch.ones(3)), torch.ones(3))
    assert torch.equal(update, torch.zeros(3))


def test_error_messages_name_the_class_the_user_built():
    with pytest.raises(ValueError, match=r"^L1qNormedGradientOptim \(parameter group 0\): q must"):
        pto.L1qNormedGradientOptim([_x()], q=2.0)
    with pytest.raises(ValueError, match=r"^L1qFrankWolfe \(parameter group 0\): dq must"):
        pto.L1qFrankWolfe([_x()], q=0.5, dq=-1.0, epsilon=1.0)
    for cls in (pto.L1FrankWolfe, pto.L2FrankWolfe, pto.LinfFrankWolfe):
        with pytest.raises(ValueError, match=rf"^{cls.__name__} \(parameter group 0\): lr must satisfy 0 <= lr <= 1"):
            cls([_x()], epsilon=1.0, lr=2.0, use_default_lr_schedule=False)


def test_chained_members_may_not_give_one_setting_two_values():
    with pytest.raises(ValueError, match="ClampedGradientOptimizer and ClampedParameterOptimizer both set 'clamp_max' "
                                         r"\(0.5 and 2.0\)"):
        pto.ChainedParamTransformingOptimizer(
            partial(pto.ClampedGradientOptimizer, clamp_max=0.5),
            partial(pto.ClampedParameterOptimizer, clamp_max=2.0),
            params=[_x()],
        )
    # the same value twice, or attributes of the members (not shared settings), are fine
    pto.ChainedParamTransformingOptimizer(
        partial(pto.ClampedGradientOptimizer, clamp_max=0.5),
        partial(pto.ClampedParameterOptimizer, clamp_max=0.5),
        partial(pto.L1NormedGradientOptim, div_by_zero_eps=1e-3),
        partial(pto.L2NormedGradientOptim, div_by_zero_eps=1e-6),
        params=[_x()],
    )


# ----------------------------------------------------------------------------- copies and checkpoints


def _copies(optimizer):
    yield "deepcopy", copy.deepcopy(optimizer)
    yield "pickle", pickle.loads(pickle.dumps(optimizer))
    buffer = io.BytesIO()
    torch.save(optimizer, buffer)
    buffer.seek(0)
    yield "torch.save", torch.load(buffer, weights_only=False)


def _params_of(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize("entry", SHIMS, ids=repr)
def test_a_copied_pickled_or_saved_optimizer_steps_exactly_as_the_original(entry: ShimEntry):
    params = [torch.nn.Parameter(starting_point(entry, (4, 3), torch.float32).to(DEVICE))]
    optimizer = _build(entry, params)
    for step in range(2):
        params[0].grad = randn((4, 3), seed=step)
        optimizer.step()
    twins = dict(_copies(optimizer))
    for how, twin in twins.items():
        assert type(twin) is type(optimizer) and repr(twin) == repr(optimizer), how
        assert _params_of(twin)[0] is not params[0], how  # its own parameters
    for step in range(2, 5):  # every copy steps exactly as the original
        grad = randn((4, 3), seed=step)
        for opt in (optimizer, *twins.values()):
            _params_of(opt)[0].grad = grad.clone()
            opt.step()
        for how, twin in twins.items():
            torch.testing.assert_close(_params_of(twin)[0], params[0], rtol=0, atol=0, msg=f"{how}, step {step}")


@pytest.mark.parametrize("entry", SHIMS, ids=repr)
def test_a_shallow_copy_shares_the_state(entry: ShimEntry):
    optimizer = _build(entry, [torch.nn.Parameter(starting_point(entry, (4, 3), torch.float32).to(DEVICE))])
    twin = copy.copy(optimizer)
    assert twin.state is optimizer.state and twin.param_groups is optimizer.param_groups
    twin.param_groups[0]["params"][0].grad = randn((4, 3), seed=0)
    twin.step()


def test_compiled_shims_copy_and_recompile():
    x = torch.nn.Parameter(torch.zeros(4, 3))
    optimizer = pto.L2ProjectedOptim([x], epsilon=1.0, lr=0.1, compile=True)
    twin = pickle.loads(pickle.dumps(optimizer))
    assert twin._compile and twin._apply_pre_step_transform_ is not type(twin)._apply_pre_step_transform_


def test_transforms_pickle_as_the_call_that_built_them():
    tx = ptx.chain(ptx.top_q(0.5, dq=0.2, seed=3), ptx.adam(0.1), ptx.projected(ptx.project_l1_ball, epsilon=2.0))
    assert repr(tx) == "chain(top_q(0.5, dq=0.2, seed=3), adam(0.1), projected(project_l1_ball, epsilon=2.0))"
    twin = pickle.loads(pickle.dumps(tx))
    params = {"w": randn((4, 5), seed=0)}
    grads = {"w": randn((4, 5), seed=1)}
    assert torch.equal(tx.update(grads, tx.init(params), params)[0]["w"], twin.update(grads, twin.init(params), params)[0]["w"])


def test_gradient_transformation_optimizer_loads_its_state_onto_the_parameters_device_and_dtype():
    # saved on the CPU in float64 (a checkpoint from another machine), loaded onto the
    # test device in float32; a second test device is where this moves devices too
    saved_params = [torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64, device="cpu"))]
    source = pto.GradientTransformationOptimizer(saved_params, ptx.chain(ptx.normalize(), ptx.adam(0.1)))
    saved_params[0].grad = torch.ones(4, 3, dtype=torch.float64, device="cpu")
    source.step()
    params = [torch.nn.Parameter(torch.zeros(4, 3, device=DEVICE))]
    target = pto.GradientTransformationOptimizer(params, ptx.chain(ptx.normalize(), ptx.adam(0.1)))
    target.load_state_dict(source.state_dict())
    for leaf in target.state[TX_STATE][0]:
        assert leaf.device == params[0].device
        assert leaf.dtype in (torch.int64, torch.float32)
    params[0].grad = torch.ones(4, 3, device=DEVICE)
    target.step()


def test_a_reordered_chains_state_is_refused_with_a_clear_message():
    params = [torch.nn.Parameter(torch.zeros(4, 3))]
    source = pto.GradientTransformationOptimizer(params, ptx.chain(ptx.sgd(0.1, momentum=0.9), ptx.frank_wolfe(1.0)))
    params[0].grad = torch.ones(4, 3)
    source.step()
    target = pto.GradientTransformationOptimizer(params, ptx.chain(ptx.frank_wolfe(1.0), ptx.sgd(0.1, momentum=0.9)))
    with pytest.raises(ValueError, match="same transforms in another order"):
        target.load_state_dict(source.state_dict())


# ----------------------------------------------------------------------------- schedulers and hooks


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.5**e),
    "MultiplicativeLR": lambda o: torch.optim.lr_scheduler.MultiplicativeLR(o, lambda e: 0.5),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4),
    "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.25, total_iters=3),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=10, cycle_momentum=False),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.1, max_lr=1.0, step_size_up=2, cycle_momentum=False),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_lr_scheduler_drives_a_gradient_transformation_optimizer_without_inner_optimizer(name):
    # without InnerOpt a group's lr (default 1.0) scales the transform's update
    x = torch.nn.Parameter(torch.zeros(3))
    optimizer = pto.GradientTransformationOptimizer([x], ptx.chain(ptx.sign(), ptx.scale(-1.0)))
    assert optimizer.param_groups[0]["lr"] == 1.0
    scheduler = SCHEDULERS[name](optimizer)
    for _ in range(3):
        lr = optimizer.param_groups[0]["lr"]
        before = x.detach().clone()
        x.grad = torch.tensor([2.0, -1.0, 0.0])
        optimizer.step()
        torch.testing.assert_close(x.detach() - before, torch.tensor([-lr, lr, 0.0]))
        scheduler.step(1.0) if name == "ReduceLROnPlateau" else scheduler.step()


@pytest.mark.parametrize("entry", [e for e in SHIMS if e.name in ("L2ProjectedOptim", "GradientTransformationOptimizer", "L1qFrankWolfe")], ids=repr)
def test_hooks_registered_on_a_shim_fire(entry: ShimEntry):
    optimizer = _build(entry, [torch.nn.Parameter(torch.zeros(4, 3))])
    fired = []
    optimizer.register_state_dict_pre_hook(lambda o: fired.append("state_dict pre"))
    optimizer.register_state_dict_post_hook(lambda o, sd: fired.append("state_dict post"))
    optimizer.register_load_state_dict_pre_hook(lambda o, sd: fired.append("load pre"))
    optimizer.register_load_state_dict_post_hook(lambda o: fired.append("load post"))
    optimizer.register_step_pre_hook(lambda o, args, kwargs: fired.append("step pre"))
    optimizer.register_step_post_hook(lambda o, args, kwargs: fired.append("step post"))
    optimizer.param_groups[0]["params"][0].grad = torch.ones(4, 3)
    optimizer.step()
    optimizer.load_state_dict(optimizer.state_dict())
    assert fired == ["step pre", "step post", "state_dict pre", "state_dict post", "load pre", "load post"]
