"""``GradientTransformationOptimizer``: any GradientTransformation as a torch.optim optimizer."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import paramtx as ptx
import paramtx.optim as pto
from ptx_testing import DEVICE


def _problem(seed=0, shapes=((4, 3, 5), (6, 2))):
    generator = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=generator, device="cpu").to(DEVICE) for s in shapes]
    grads = [[torch.randn(s, generator=generator, device="cpu").to(DEVICE) for s in shapes] for _ in range(4)]
    return start, grads


@pytest.mark.parametrize(
    "tx",
    [
        ptx.chain(ptx.top_q(q=0.6, dq=0.3, seed=1), ptx.sgd(lr=0.1, momentum=0.9)),
        ptx.chain(ptx.normalize(p=2), ptx.adam(lr=0.05)),
        ptx.chain(ptx.lmo_l1q(q=0.5), ptx.frank_wolfe(epsilon=1.0)),
    ],
    ids=["top-q + sgd momentum", "normalize + adam", "L1q Frank-Wolfe"],
)
def test_without_inner_optimizer_it_is_the_functional_path(tx):
    start, grads = _problem()
    params = [p.clone() for p in start]
    state = tx.init(params)
    for step_grads in grads:
        updates, state = tx.update(step_grads, state, params)
        params = ptx.apply_updates(params, updates)

    leaves = [p.clone().requires_grad_(True) for p in start]
    optimizer = pto.GradientTransformationOptimizer(leaves, tx)
    for step_grads in grads:
        for leaf, grad in zip(leaves, step_grads):
            leaf.grad = grad.clone()
        optimizer.step()
        for leaf, grad in zip(leaves, step_grads):
            assert torch.equal(leaf.grad, grad)  # without InnerOpt the gradients are left alone
    for leaf, expected in zip(leaves, params):
        assert torch.equal(leaf.detach(), expected)


@pytest.mark.parametrize(
    "make_generic, make_named",
    [
        (
            lambda p: pto.GradientTransformationOptimizer(
                p, ptx.normalize(p=2), torch.optim.SGD, lr=0.1, momentum=0.9,
                projection=partial(ptx.project_l2_ball, epsilon=0.5)),
            lambda p: pto.L2ProjectedOptim(p, epsilon=0.5, lr=0.1, momentum=0.9),
        ),
        (
            lambda p: pto.GradientTransformationOptimizer(
                p, ptx.top_q(q=0.75), partial(torch.optim.Adam, lr=0.02)),
            lambda p: pto.TopQGradientOptimizer(p, q=0.75, InnerOpt=torch.optim.Adam, lr=0.02),
        ),
        (
            lambda p: pto.GradientTransformationOptimizer(
                p, ptx.sign(), torch.optim.SGD, lr=0.3, projection=partial(ptx.project_linf_ball, epsilon=0.4)),
            lambda p: pto.LinfProjectedOptim(p, epsilon=0.4, lr=0.3),
        ),
    ],
    ids=["normalize/SGD/project_l2_ball", "top_q/Adam", "sign/SGD/project_linf_ball"],
)
def test_with_inner_optimizer_it_equals_the_named_shim(make_generic, make_named):
    start, grads = _problem(1)
    runs = []
    for make in (make_generic, make_named):
        leaves = [p.clone().requires_grad_(True) for p in start]
        optimizer = make(leaves)
        for step_grads in grads:
            for leaf, grad in zip(leaves, step_grads):
                leaf.grad = grad.clone()
            optimizer.step()
        runs.append(leaves)
    for a, b in zip(*runs):
        assert torch.equal(a.detach(), b.detach())
        assert torch.equal(a.grad, b.grad)  # the transformed gradient, in both


def test_state_is_the_inner_optimizers_and_lr_schedulers_drive_it():
    x = torch.zeros(1, 2, requires_grad=True)
    optimizer = pto.GradientTransformationOptimizer([x], ptx.normalize(p=2), torch.optim.SGD, lr=1.0)
    assert optimizer.state is optimizer.inner_opt.state
    assert optimizer.param_groups is optimizer.inner_opt.param_groups
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    for _ in range(2):
        x.grad = torch.tensor([[0.0, -5.0]])
        optimizer.step()
        scheduler.step()
    torch.testing.assert_close(x.detach(), torch.tensor([[0.0, 1.1]]))
    assert repr(optimizer).startswith("GradientTransformationOptimizer [SGD](")


def test_parameter_groups_each_get_their_own_transform_state_and_can_be_added():
    x, y = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    optimizer = pto.GradientTransformationOptimizer([x], ptx.sgd(lr=1.0, momentum=0.5))
    x.grad = torch.ones(3)
    optimizer.step()
    optimizer.add_param_group({"params": [y]})
    x.grad, y.grad = torch.ones(3), torch.ones(2)
    optimizer.step()
    torch.testing.assert_close(x.detach(), torch.full((3,), -2.5))  # 1, then 1.5
    torch.testing.assert_close(y.detach(), torch.full((2,), -1.0))  # a fresh momentum buffer


def test_parameters_without_gradients_pass_through():
    x, y = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    optimizer = pto.GradientTransformationOptimizer([x, y], ptx.chain(ptx.sign(), ptx.scale(-0.5)))
    x.grad = torch.tensor([3.0, -3.0])
    optimizer.step()
    assert torch.equal(x.detach(), torch.tensor([0.5, 1.5]))
    assert torch.equal(y.detach(), torch.ones(2)) and y.grad is None


def test_closure_is_called_and_its_loss_returned():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = pto.GradientTransformationOptimizer([x], ptx.chain(ptx.sign(), ptx.scale(-0.25)))

    def closure():
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 5.0
    torch.testing.assert_close(x.detach(), torch.tensor([0.75, -1.75]))


def test_a_state_that_does_not_fit_the_transform_is_an_error():
    x = torch.zeros(3, requires_grad=True)
    saved = pto.GradientTransformationOptimizer([x], ptx.sgd(lr=0.1, momentum=0.9))
    x.grad = torch.ones(3)
    saved.step()
    other = pto.GradientTransformationOptimizer([x], ptx.chain(ptx.top_q(0.5), ptx.sgd(lr=0.1, momentum=0.9)))
    with pytest.raises(ValueError, match=r"parameter group 0\): the saved transform state has 2 leaves"):
        other.load_state_dict(saved.state_dict())
    other.step()  # the rejected state dict changed nothing
