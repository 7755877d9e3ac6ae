"""Training inside torch.func: ``functional_call`` + ``grad``, and an ensemble under ``vmap``.

The chain is ``normalize(2) -> sgd -> projected(project_l2_ball)`` with the
default ``param_ndim=-1``: each row of a weight matrix, and each element of a
bias vector, is one datum that must stay in the epsilon-ball.
"""

from __future__ import annotations

import copy

import optree
import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

import paramtx as ptx
from ptx_testing import per_datum_norm, randn

EPSILON = 0.5
LR = 0.05


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _data(seed: int = 0):
    """Inputs, and targets of a teacher MLP whose parameters lie in the balls (so loss 0 is feasible)."""
    x = randn((64, 3), seed=seed)
    teacher = _mlp(99)
    params = {name: p.detach() for name, p in teacher.named_parameters()}
    params = ptx.project_l2_ball(params, epsilon=EPSILON)
    with torch.no_grad():
        y = functional_call(teacher, params, (x,))
    return x, y


def _tx(momentum: float = 0.0) -> ptx.GradientTransformation:
    return ptx.chain(
        ptx.normalize(2),
        ptx.sgd(LR, momentum=momentum),
        ptx.projected(ptx.project_l2_ball, epsilon=EPSILON),
    )


def _loss_fn(model):
    base = copy.deepcopy(model).to("meta")

    def loss(params, x, y):
        return torch.mean((functional_call(base, params, (x,)) - y) ** 2)

    return loss


def _assert_in_ball(params: dict) -> None:
    for name, p in params.items():
        # projected lands each datum at norm <= epsilon up to float32 rounding of
        # its norm and the rescaling: (D + 2) u with D <= 16 here
        bound = EPSILON * (1 + 18 * torch.finfo(p.dtype).eps)
        assert (per_datum_norm(p, 2, -1) <= bound).all(), name


def test_training_a_small_mlp_in_a_torch_func_loop_lowers_the_loss_and_stays_in_the_balls():
    model = _mlp(0)
    loss = _loss_fn(model)
    params = {name: p.detach() for name, p in model.named_parameters()}
    # the default init puts some rows outside the ball: the projection has work to do
    assert (per_datum_norm(params["0.weight"], 2, -1) > EPSILON).any()
    x, y = _data()
    tx = _tx()
    state = tx.init(params)
    step = grad(loss)
    losses = [loss(params, x, y).item()]
    for _ in range(150):
        updates, state = tx.update(step(params, x, y), state, params)
        params = ptx.apply_updates(params, updates)
        _assert_in_ball(params)
        losses.append(loss(params, x, y).item())
    # the teacher is feasible (loss 0): the loss falls at least five-fold (here ~50-fold)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
    assert losses[-1] < min(losses[:10])


def _member(tree, index: int):
    return optree.tree_map(lambda t: t[index], tree)


def _stack(trees):
    return optree.tree_map(lambda *ts: torch.stack(ts), *trees)


@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["plain", "momentum"])
def test_the_update_under_vmap_over_an_ensemble_equals_four_separate_updates(momentum):
    models = [_mlp(seed) for seed in range(4)]
    params, _ = stack_module_state(models)
    params = {name: p.detach() for name, p in params.items()}
    loss = _loss_fn(models[0])
    x, y = _data()
    tx = _tx(momentum)
    # the ensemble state: vmap of init, with default in_dims (a state holds only tensors)
    state = vmap(tx.init)(params)
    assert optree.tree_structure(state, none_is_leaf=True) == optree.tree_structure(
        tx.init(_member(params, 0)), none_is_leaf=True
    )
    members = [_member(params, m) for m in range(4)]
    member_states = [tx.init(p) for p in members]
    ensemble_update = vmap(tx.update)
    for _ in range(5):
        member_grads = [grad(loss)(p, x, y) for p in members]
        updates, state = ensemble_update(_stack(member_grads), state, params)
        params = ptx.apply_updates(params, updates)
        for m in range(4):
            member_updates, member_states[m] = tx.update(member_grads[m], member_states[m], members[m])
            members[m] = ptx.apply_updates(members[m], member_updates)
            # the same kernels, batched over the ensemble dim: bit-for-bit equal
            exact = dict(rtol=0, atol=0)
            torch.testing.assert_close(_member(updates, m), member_updates, **exact)
            torch.testing.assert_close(_member(params, m), members[m], **exact)
            if momentum:
                torch.testing.assert_close(
                    _member(state[1].momentum_buffer, m), member_states[m][1].momentum_buffer, **exact
                )


def test_an_ensemble_trains_under_vmap_of_grad_and_update():
    models = [_mlp(seed) for seed in range(4)]
    params, _ = stack_module_state(models)
    params = {name: p.detach() for name, p in params.items()}
    loss = _loss_fn(models[0])
    x, y = _data()
    tx = _tx(momentum=0.5)
    state = vmap(tx.init)(params)

    def train_step(params, state):
        grads = vmap(grad(loss), in_dims=(0, None, None))(params, x, y)
        updates, state = vmap(tx.update)(grads, state, params)
        return ptx.apply_updates(params, updates), state

    losses0 = vmap(loss, in_dims=(0, None, None))(params, x, y)
    for _ in range(40):
        params, state = train_step(params, state)
    losses = vmap(loss, in_dims=(0, None, None))(params, x, y)
    # every member learns (five-fold at least; here 10- to 300-fold in 40 steps)
    assert (losses < 0.2 * losses0).all(), (losses0, losses)
    for m in range(4):
        _assert_in_ball(_member(params, m))
