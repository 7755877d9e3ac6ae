"""The shims in the torch.optim ecosystem: signatures, shared state, LR schedulers,
closures, hooks, ``zero_grad``, inner optimizers given every way, chains and subclasses."""

from __future__ import annotations

import inspect
import warnings
from functools import partial

import pytest
import torch

import paramtx.optim as pto
from paramtx._lift.dense import vmap_reference
from ptx_testing import DEVICE

rai = pytest.importorskip("rai_toolbox.optim")

RAI_CLASSES = sorted(rai.__all__)


def test_paramtx_optim_has_every_rai_toolbox_class():
    assert set(RAI_CLASSES) <= set(pto.__all__)
    assert len(RAI_CLASSES) == 16


@pytest.mark.parametrize("name", RAI_CLASSES)
def test_signature_has_rai_toolbox_parameters_kinds_and_defaults(name):
    # Two deliberate differences. rai-toolbox's "required" marker is torch.optim.SGD's lr
    # default, 0.001 under torch >= 2 (see test_optim_validation): paramtx's q and epsilon
    # have no default, so that leaving them out is Python's (and hydra-zen's) ordinary
    # missing-argument error. Its generator defaults to None, meaning torch's default
    # generator (a Generator default cannot be written into a hydra-zen config).
    # Parameters paramtx adds (e.g. `compile`) must be keyword-only with a default, so
    # that every call written for rai-toolbox binds the same way.
    from rai_toolbox.optim.optimizer import REQUIRED as RAI_REQUIRED

    ours = inspect.signature(getattr(pto, name)).parameters
    theirs = inspect.signature(getattr(rai, name)).parameters
    assert [key for key in ours if key in theirs] == list(theirs)
    for key, param in theirs.items():
        assert ours[key].kind == param.kind, key
        expected = param.default
        if param.default is RAI_REQUIRED and key in ("q", "epsilon"):
            expected = inspect.Parameter.empty
        if param.default is torch.default_generator:
            expected = None
        assert ours[key].default is expected or ours[key].default == expected, key
    for key in set(ours) - set(theirs):
        assert ours[key].kind is inspect.Parameter.KEYWORD_ONLY and ours[key].default is not inspect.Parameter.empty, key


def _x(*shape):
    return torch.zeros(*shape or (2, 3), requires_grad=True)


def test_state_param_groups_and_defaults_are_the_inner_optimizers_objects():
    x = _x()
    optimizer = pto.L2ProjectedOptim([x], epsilon=1.0, InnerOpt=torch.optim.Adam, lr=0.1)
    inner = optimizer.inner_opt
    assert optimizer.state is inner.state
    assert optimizer.param_groups is inner.param_groups
    assert optimizer.defaults is inner.defaults
    assert optimizer.defaults["epsilon"] == 1.0 and optimizer.defaults["betas"] == (0.9, 0.999)
    x.grad = torch.ones(2, 3)
    optimizer.step()
    assert set(optimizer.state[x]) == {"step", "exp_avg", "exp_avg_sq"}
    optimizer.load_state_dict(optimizer.state_dict())
    assert optimizer.state is inner.state and optimizer.param_groups is inner.param_groups


def test_chained_members_stay_in_sync_after_load_state_dict():
    optimizer = pto.L1qNormedGradientOptim([_x()], q=0.5, dq=0.2, lr=0.1)
    optimizer.load_state_dict(optimizer.state_dict())
    for member in optimizer._chain:
        assert member.state is optimizer.state and member.param_groups is optimizer.param_groups


@pytest.mark.parametrize(
    "make",
    [
        lambda params: pto.L2ProjectedOptim(params, epsilon=100.0, lr=1.0),
        lambda params: pto.SignedGradientOptim(params, InnerOpt=partial(torch.optim.SGD, momentum=0.0), lr=1.0),
        lambda params: pto.ChainedParamTransformingOptimizer(pto.SignedGradientOptim, params=params, lr=1.0),
    ],
    ids=["L2ProjectedOptim", "partial InnerOpt", "chained"],
)
def test_lr_scheduler_drives_the_shim(make):
    x = _x(1, 4)
    optimizer = make([x])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    steps = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for _ in range(3):
            before = x.detach().clone()
            x.grad = torch.tensor([[-1.0, 0.0, 0.0, 0.0]])
            optimizer.step()
            scheduler.step()
            steps.append((x.detach() - before)[0, 0].item())
    assert steps == [1.0, 0.5, 0.25]
    assert optimizer.inner_opt.param_groups[0]["lr"] == 0.125
    assert scheduler.get_last_lr() == [0.125]


def test_lr_scheduler_drives_the_frank_wolfe_lr():
    x = _x(3)
    optimizer = pto.LinfFrankWolfe([x], epsilon=1.0, lr=0.5, use_default_lr_schedule=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 / (epoch + 1))
    for _ in range(2):
        x.grad = -torch.ones(3)
        optimizer.step()
        scheduler.step()
    # alpha = 0.5, then 0.25: x = 0.5 * 1 then 0.75 * 0.5 + 0.25 * 1
    torch.testing.assert_close(x.detach(), torch.full((3,), 0.625))


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    x, y = _x(), _x(4)
    optimizer = pto.TopQGradientOptimizer([x, y], q=0.5, lr=0.1)
    x.grad, y.grad = torch.ones(2, 3), torch.ones(4)
    optimizer.zero_grad(set_to_none=set_to_none)
    for p in (x, y):
        assert p.grad is None if set_to_none else torch.equal(p.grad, torch.zeros_like(p))


def test_step_with_closure_transforms_the_gradients_it_computes_and_returns_its_loss():
    target = torch.tensor([[3.0, -4.0], [0.0, 1.0]])

    def run(use_closure):
        x = _x(2, 2)
        optimizer = pto.L2NormedGradientOptim([x], lr=0.5)
        losses = []
        for _ in range(3):
            def closure():
                optimizer.zero_grad()
                loss = ((x - target) ** 2).sum()
                loss.backward()
                return loss

            if use_closure:
                losses.append(optimizer.step(closure).item())
            else:
                losses.append(closure().item())
                assert optimizer.step() is None
        return x.detach(), x.grad, losses

    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(run(True), run(False)))


def test_closure_with_lbfgs_inner_optimizer():
    x = torch.tensor([2.0, -1.0], requires_grad=True)
    optimizer = pto.ClampedGradientOptimizer([x], clamp_min=-1.0, clamp_max=1.0, InnerOpt=torch.optim.LBFGS, lr=0.5)

    def closure():
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == 5.0
    assert x.grad.abs().max() <= 1.0  # every gradient LBFGS saw was clamped


def test_step_hooks_run():
    calls = []
    optimizer = pto.SignedGradientOptim([_x()], lr=0.1)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    optimizer.step()
    assert calls == ["pre", "post"]


def test_inner_optimizer_instance_is_shared_not_copied():
    x = _x()
    inner = torch.optim.SGD([x], lr=1.0, momentum=0.5)
    optimizer = pto.L1NormedGradientOptim(InnerOpt=inner, params=None)
    assert optimizer.inner_opt is inner and optimizer.state is inner.state
    assert inner.defaults["param_ndim"] == -1 and inner.param_groups[0]["grad_scale"] == 1.0
    x.grad = torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    optimizer.step()
    assert torch.equal(x.grad, torch.tensor([[0.25, 0.25, 0.5], [0.0, 0.0, 0.0]]))
    assert "momentum_buffer" in inner.state[x]


def test_inner_optimizer_arguments_are_ignored_with_a_warning_for_an_instance():
    inner = torch.optim.SGD([_x()], lr=1.0)
    with pytest.warns(UserWarning, match="lr"):
        pto.SignedGradientOptim(None, InnerOpt=inner, lr=0.5)
    assert inner.param_groups[0]["lr"] == 1.0


def test_a_shim_can_be_the_inner_optimizer_of_another():
    x = _x(1, 4)
    inner = pto.TopQGradientOptimizer([x], q=0.5, lr=1.0)
    optimizer = pto.L2ProjectedOptim(None, InnerOpt=inner, epsilon=1.0)
    x.grad = torch.tensor([[3.0, 0.0, -4.0, 0.0]])
    optimizer.step()  # normalize, then top-q (inner), SGD, then project
    torch.testing.assert_close(x.detach(), torch.tensor([[-0.6, 0.0, 0.8, 0.0]]))
    assert repr(optimizer).startswith("L2ProjectedOptim [TopQGradientOptimizer](")


def test_chain_applies_its_members_left_to_right():
    grad = torch.tensor([0.5, -3.0, 2.0, 1.0])

    def run(*members):
        x = _x(4)
        x.grad = grad.clone()
        pto.ChainedParamTransformingOptimizer(*members, params=[x], lr=1.0, param_ndim=None).step()
        return x.grad

    top_q = partial(pto.TopQGradientOptimizer, q=0.5)
    clamp = partial(pto.ClampedGradientOptimizer, clamp_min=-1.0, clamp_max=1.0)
    assert torch.equal(run(top_q, clamp), torch.tensor([0.0, -1.0, 1.0, 0.0]))
    # clamping first ties three magnitudes at 1; top-q keeps 2 of them
    assert int((run(clamp, top_q) != 0).sum()) == 2


def test_chain_of_three_has_a_composition_repr_and_per_class_defaults():
    optimizer = pto.ChainedParamTransformingOptimizer(
        partial(pto.TopQGradientOptimizer, q=0.25),
        pto.L2NormedGradientOptim,
        partial(pto.L2ProjectedOptim, epsilon=2.0),
        params=[_x()],
        InnerOpt=torch.optim.Adam,
    )
    text = repr(optimizer)
    assert text.startswith("L2ProjectedOptim ○ L2NormedGradientOptim ○ TopQGradientOptimizer [Adam](\nParameter Group 0\n")
    assert optimizer.defaults["q"] == 0.25 and optimizer.defaults["epsilon"] == 2.0


def test_user_subclass_of_a_builtin_can_extend_its_hooks():
    class ProjectedThenShifted(pto.L2ProjectedOptim):
        def _post_step_transform_(self, param, optim_group):
            super()._post_step_transform_(param, optim_group)
            param.add_(optim_group["shift"])

    x = _x(1, 2)
    optimizer = ProjectedThenShifted([x], epsilon=1.0, lr=5.0, defaults={"shift": 0.5})
    x.grad = torch.tensor([[-3.0, 4.0]])
    optimizer.step()
    torch.testing.assert_close(x.detach(), torch.tensor([[1.1, -0.3]]))
    assert "shift: 0.5" in repr(optimizer)


def test_a_pre_step_transform_that_replaces_the_gradient_is_an_error():
    class Replacing(pto.ParamTransformingOptimizer):
        def _pre_step_transform_(self, param, optim_group):
            param.grad = param.grad * 2

    x = _x()
    x.grad = torch.ones(2, 3)
    with pytest.raises(ValueError, match="in place"):
        Replacing([x]).step()


def test_project_is_a_deprecated_alias_of_the_post_step_transform():
    x = torch.tensor([5.0, -5.0], requires_grad=True)
    optimizer = pto.LinfProjectedOptim([x], epsilon=1.0)
    with pytest.warns(FutureWarning):
        optimizer.project()
    assert torch.equal(x.detach(), torch.tensor([1.0, -1.0]))


def test_parameters_without_gradients_are_skipped_but_still_projected():
    x, y = torch.tensor([3.0, 4.0], requires_grad=True), torch.tensor([0.0, 2.0], requires_grad=True)
    optimizer = pto.L2ProjectedOptim([x, y], epsilon=1.0, lr=1.0, param_ndim=None)
    y.grad = torch.tensor([0.0, 1.0])
    optimizer.step()
    torch.testing.assert_close(x.detach(), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(y.detach(), torch.tensor([0.0, 1.0]))
    assert x.grad is None


@pytest.mark.parametrize(
    "make",
    [
        lambda p: pto.L2ProjectedOptim(p, epsilon=0.5, lr=0.3, momentum=0.5),
        lambda p: pto.L1qFrankWolfe(p, q=0.6, epsilon=1.0),
        lambda p: pto.L1FrankWolfe(p, epsilon=1.0),
        lambda p: pto.TopQGradientOptimizer(p, q=0.7, InnerOpt=torch.optim.Adam, lr=0.1),
    ],
    ids=["L2ProjectedOptim", "L1qFrankWolfe", "L1FrankWolfe", "TopQGradientOptimizer"],
)
def test_row_batched_and_vmap_reference_paths_agree(make):
    def run():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(8, 3, 4, 4, generator=generator, device="cpu").to(DEVICE).requires_grad_(True)
        optimizer = make([x])
        for _ in range(3):
            x.grad = torch.randn(8, 3, 4, 4, generator=generator, device="cpu").to(DEVICE)
            optimizer.step()
        return x.detach()

    rows = run()
    with vmap_reference():
        reference = run()
    torch.testing.assert_close(rows, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_are_kept(dtype):
    x = torch.ones(4, 6, dtype=dtype, requires_grad=True)
    optimizer = pto.L1qFrankWolfe([x], q=0.5, epsilon=1.0)
    x.grad = torch.arange(24, dtype=dtype).reshape(4, 6) - 10
    optimizer.step()
    assert x.dtype == dtype and x.grad.dtype == dtype
    torch.testing.assert_close(x.detach().abs().sum(1).float(), torch.ones(4))
