"""The attack loop: ``paramtx.perturbations.gradient_ascent`` against rai-toolbox 0.2.1's,
restarts run as one batch against a loop over restarts, torchattacks' PGD and PGD-L2
against the same steps written with paramtx, and the checks of bad arguments."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

import paramtx as ptx
import paramtx.perturbations as paramtx_perturbations
from paramtx.optim import GradientTransformationOptimizer, L2ProjectedOptim, LinfProjectedOptim
from paramtx.perturbations import (
    AdditivePerturbation,
    PerturbationModel,
    gradient_ascent,
    random_restart,
    uniform_like_l2_n_ball_,
)

rai_perturbations = pytest.importorskip("rai_toolbox.perturbations")

N, SHAPE, CLASSES = 6, (3, 5, 5), 3


def _cnn(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, CLASSES)).to(dtype)


def _data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(N, *SHAPE, generator=generator, dtype=dtype), torch.randint(CLASSES, (N,), generator=generator)


def _copy_(delta: torch.Tensor, source: torch.Tensor) -> None:
    delta.copy_(source)


def _starts(restarts: int, dtype: torch.dtype, epsilon: float = 0.5) -> torch.Tensor:
    starts = torch.empty(restarts * N, *SHAPE, dtype=dtype)
    uniform_like_l2_n_ball_(starts, epsilon=epsilon, generator=torch.Generator().manual_seed(2))
    return starts


OPTIMIZERS = {
    "SGD": (torch.optim.SGD, {"lr": 0.1}),
    "L2ProjectedOptim": (L2ProjectedOptim, {"epsilon": 0.5, "lr": 0.2}),
    "LinfProjectedOptim": (LinfProjectedOptim, {"epsilon": 0.05, "lr": 0.01}),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("use_best", [False, True])
@pytest.mark.parametrize("targeted", [False, True])
def test_same_outputs_as_rai_toolbox_gradient_ascent(name, use_best, targeted):
    optimizer, settings = OPTIMIZERS[name]
    images, labels = _data()
    outputs = []
    for module in (rai_perturbations, paramtx_perturbations):
        starts = partial(module.AdditivePerturbation, init_fn=rai_perturbations.uniform_like_l2_n_ball_,
                         epsilon=0.3, generator=torch.Generator().manual_seed(3))
        outputs.append(module.gradient_ascent(
            model=_cnn(), data=images, target=labels, optimizer=optimizer, steps=4, perturbation_model=starts,
            use_best=use_best, targeted=targeted, **settings,
        ))
    # the same tensor operations in the same order: equal to the bit
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


def test_same_outputs_as_rai_toolbox_with_a_built_model_and_optimizer_and_a_mean_reduction():
    images, labels = _data()
    results, deltas = [], []
    for module in (rai_perturbations, paramtx_perturbations):
        perturbation = module.AdditivePerturbation(images)
        solved = module.gradient_ascent(
            model=_cnn(), data=images, target=labels, optimizer=torch.optim.Adam(perturbation.parameters(), lr=0.01),
            steps=3, perturbation_model=perturbation, reduction_fn=torch.mean,
        )
        results.append(solved)
        deltas.append(perturbation.delta.detach())
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.equal(deltas[0], deltas[1])


def test_random_restart_of_another_solver_loops_like_rai_toolbox():
    images, labels = _data()
    outputs = []
    for wrap in (rai_perturbations.random_restart, random_restart):
        starts = partial(rai_perturbations.AdditivePerturbation, init_fn=rai_perturbations.uniform_like_l2_n_ball_,
                         epsilon=1.0, generator=torch.Generator().manual_seed(4))
        solve = wrap(rai_perturbations.gradient_ascent, 3)
        outputs.append(solve(model=_cnn(), data=images, target=labels, optimizer=L2ProjectedOptim, epsilon=1.0,
                             lr=0.3, steps=2, perturbation_model=starts))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def _loop_over_restarts(restarts, starts, dtype, **settings):
    """rai-toolbox's restart rule, one solve per restart: keep the strictly better loss, earliest on ties."""
    images, labels = _data(dtype)
    best_x = best_loss = None
    for restart in starts.chunk(restarts):
        x, loss = gradient_ascent(model=_cnn(dtype), data=images, target=labels,
                                  perturbation_model=partial(AdditivePerturbation, init_fn=_copy_, source=restart),
                                  **settings)
        if best_x is None:
            best_x, best_loss = x.clone(), loss.clone()
            continue
        better = loss < best_loss if settings.get("targeted", False) else loss > best_loss
        best_x[better], best_loss[better] = x[better], loss[better]
    return best_x, best_loss


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer": L2ProjectedOptim, "epsilon": 0.5, "lr": 0.2},
        {"optimizer": L2ProjectedOptim, "epsilon": 0.5, "lr": 0.2, "use_best": True, "reduction_fn": torch.mean},
        {"optimizer": torch.optim.SGD, "lr": 0.5, "reduction_fn": torch.mean},  # the mean's scale reaches the step
        {"optimizer": LinfProjectedOptim, "epsilon": 0.05, "lr": 0.01, "targeted": True, "use_best": True},
    ],
    ids=["l2", "l2-best-mean", "sgd-mean", "linf-targeted-best"],
)
@pytest.mark.parametrize("restarts_per_call", [None, 1, 3], ids=["one-call", "calls-of-1", "calls-of-3-and-1"])
def test_batched_restarts_equal_a_loop_over_restarts(settings, restarts_per_call):
    restarts, dtype = 4, torch.float64
    starts = _starts(restarts, dtype)
    expected_x, expected_loss = _loop_over_restarts(restarts, starts, dtype, steps=5, **settings)
    images, labels = _data(dtype)
    x, loss = gradient_ascent(model=_cnn(dtype), data=images, target=labels, restarts=restarts, steps=5,
                              perturbation_model=partial(AdditivePerturbation, init_fn=_copy_, source=starts),
                              restarts_per_call=restarts_per_call, **settings)
    # float64: a batch of 4N rows instead of N may change a kernel's summation order (a few ulp), nothing more
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, expected_x, rtol=1e-12, atol=1e-12)
    # and the restarts did something: not every example kept its first restart
    first_x, _ = _loop_over_restarts(1, starts[:N], dtype, steps=5, **settings)
    assert not torch.equal(x, first_x)


def test_random_restart_of_gradient_ascent_calls_the_model_once_per_step_on_the_stacked_batch():
    images, labels = _data()
    cnn, calls = _cnn(), []

    def model(x):
        calls.append(x.shape[0])
        return cnn(x)

    starts = partial(AdditivePerturbation, init_fn=uniform_like_l2_n_ball_, epsilon=0.5,
                     generator=torch.Generator().manual_seed(5))
    solve = random_restart(partial(gradient_ascent, restarts=2), 3)
    x, loss = solve(model=model, data=images, target=labels, optimizer=L2ProjectedOptim, epsilon=0.5, lr=0.1,
                    steps=4, perturbation_model=starts)
    assert calls == [6 * N] * 5  # 4 steps and the final evaluation, 2 x 3 restarts each
    assert x.shape == images.shape and loss.shape == (N,)
    assert ((x - images).flatten(1).norm(dim=1) <= 0.5 * (1 + 1e-6)).all()


@pytest.mark.parametrize("per_example_target", [True, False])
def test_restarts_per_call_cuts_the_model_s_calls_and_their_targets(per_example_target):
    images, labels = _data()
    cnn, calls = _cnn(), []

    def model(x):
        calls.append(x.shape[0])
        return cnn(x)

    def criterion(output, target):
        seen.append(target.shape[0] if target.ndim else 0)
        return torch.nn.functional.cross_entropy(output, target.expand(output.shape[0]), reduction="none")

    seen = []
    target = labels if per_example_target else labels[0]
    def starts():  # the same starts in both solves
        return partial(AdditivePerturbation, init_fn=uniform_like_l2_n_ball_, epsilon=0.5,
                       generator=torch.Generator().manual_seed(5))

    settings = dict(data=images, target=target, optimizer=L2ProjectedOptim, epsilon=0.5, lr=0.1, steps=2,
                    criterion=criterion, restarts=5)
    x, loss = gradient_ascent(model=model, restarts_per_call=2, perturbation_model=starts(), **settings)
    assert calls == [2 * N, 2 * N, N] * 3  # 2 steps and the final evaluation: restarts 1-2, 3-4, 5
    assert seen == ([2 * N, 2 * N, N] if per_example_target else [0, 0, 0]) * 3
    calls.clear()
    x_one, loss_one = gradient_ascent(model=model, perturbation_model=starts(), **settings)
    assert calls == [5 * N] * 3
    torch.testing.assert_close(loss, loss_one, rtol=1e-6, atol=1e-6)  # float32, calls of other sizes
    torch.testing.assert_close(x, x_one, rtol=1e-6, atol=1e-6)


def test_ties_between_restarts_keep_the_earliest():
    # |x + delta| from x = 0 with starts +0.5 then -0.5: equal losses, the first restart's point wins
    starts = torch.tensor([[0.5], [-0.5]])
    x, loss = gradient_ascent(model=lambda x: x, data=torch.zeros(1, 1), target=0.0, restarts=2, steps=2,
                              criterion=lambda out, y: (out - y).abs().sum(1), optimizer=torch.optim.SGD, lr=0.25,
                              perturbation_model=partial(AdditivePerturbation, init_fn=_copy_, source=starts))
    assert torch.equal(x, torch.tensor([[1.0]])) and torch.equal(loss, torch.tensor([1.0]))


def test_a_per_example_target_follows_its_example_and_a_shared_target_is_shared():
    data = torch.tensor([[0.0], [10.0]])
    distance = lambda out, y: (out - y).abs().sum(1)  # noqa: E731
    common = dict(model=lambda x: x, data=data, criterion=distance, optimizer=torch.optim.SGD, lr=1.0, steps=1,
                  restarts=3)
    _, per_example = gradient_ascent(target=torch.tensor([[1.0], [12.0]]), **common)
    assert torch.equal(per_example, torch.tensor([2.0, 3.0]))
    _, shared = gradient_ascent(target=torch.tensor(1.0), **common)
    assert torch.equal(shared, torch.tensor([2.0, 10.0]))


def test_the_model_is_restored_and_the_inputs_are_untouched():
    cnn = _cnn().train()
    cnn[0].weight.requires_grad_(False)
    images, labels = _data()
    images.requires_grad_(True)
    before = images.detach().clone()
    seen = []
    gradient_ascent(model=lambda x: (seen.append(cnn.training), cnn(x))[1], data=images, target=labels,
                    optimizer=torch.optim.SGD, lr=0.1, steps=1)
    gradient_ascent(model=cnn, data=images, target=labels, optimizer=torch.optim.SGD, lr=0.1, steps=1)
    assert seen == [True, True]  # a plain callable is not put in eval mode
    assert cnn.training and all(module.training for module in cnn.modules())
    assert [p.requires_grad for p in cnn.parameters()] == [False, True, True, True]
    assert images.requires_grad and images.grad is None and torch.equal(images.detach(), before)


def test_a_module_runs_in_eval_mode_with_frozen_weights():
    cnn, seen = _cnn().train(), []
    probe = nn.Sequential(cnn, nn.Identity())
    probe[1].register_forward_hook(lambda module, args, out: seen.append(
        (cnn.training, any(p.requires_grad for p in cnn.parameters()))))
    images, labels = _data()
    gradient_ascent(model=probe, data=images, target=labels, optimizer=torch.optim.SGD, lr=0.1, steps=2)
    assert seen == [(False, False)] * 3 and all(p.grad is None for p in cnn.parameters())


def test_additive_perturbation_follows_the_data_and_delta_ndim():
    data = torch.ones(4, 3, 2, dtype=torch.float64)
    model = AdditivePerturbation(data)
    assert model.delta.shape == data.shape and model.delta.dtype == torch.float64
    assert torch.equal(model.delta, torch.zeros_like(data)) and isinstance(model, PerturbationModel)
    assert AdditivePerturbation(data, delta_ndim=-1).delta.shape == (3, 2)
    assert AdditivePerturbation(data, delta_ndim=1).delta.shape == (2,)
    assert AdditivePerturbation((4, 3), dtype=torch.float16).delta.dtype == torch.float16
    shared = AdditivePerturbation(data, delta_ndim=-1, init_fn=torch.nn.init.constant_, val=0.5)
    assert torch.equal(shared(data), torch.full_like(data, 1.5))


CNN, IMAGES, LABELS = _cnn(), *_data()
BASE = dict(model=CNN, data=IMAGES, target=LABELS, optimizer=torch.optim.SGD, steps=1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: gradient_ascent(**{**BASE, "steps": -1}, lr=0.1), ValueError,
         "gradient_ascent: steps must satisfy steps >= 0, got -1"),
        (lambda: gradient_ascent(**{**BASE, "steps": 2.0}, lr=0.1), TypeError,
         "gradient_ascent: steps must be an int, got 2.0"),
        (lambda: gradient_ascent(**BASE, restarts=0, lr=0.1), ValueError,
         "gradient_ascent: restarts must satisfy restarts >= 1, got 0"),
        (lambda: gradient_ascent(**BASE, restarts=2, restarts_per_call=0, lr=0.1), ValueError,
         "gradient_ascent: restarts_per_call must satisfy restarts_per_call >= 1, got 0"),
        (lambda: gradient_ascent(**BASE, restarts=2, restarts_per_call=1.5, lr=0.1), TypeError,
         "gradient_ascent: restarts_per_call must be an int"),
        (lambda: gradient_ascent(**BASE, targeted="yes", lr=0.1), TypeError,
         "gradient_ascent: targeted must be a bool, got 'yes'"),
        (lambda: gradient_ascent(**{**BASE, "optimizer": "sgd"}), TypeError,
         "gradient_ascent: optimizer must be a torch.optim.Optimizer, or a class or partial building one, got 'sgd'"),
        (lambda: gradient_ascent(**BASE, perturbation_model=lambda x: x, lr=0.1), TypeError,
         "gradient_ascent: perturbation_model must be a PerturbationModel"),
        (lambda: gradient_ascent(**BASE, criterion=lambda out, y: out.sum(), use_best=True, lr=0.1), ValueError,
         "gradient_ascent: use_best=True needs criterion to return one loss per datum (e.g. reduction='none'); "
         "it returned shape () for data of shape (6, 3, 5, 5)"),
        (lambda: gradient_ascent(**BASE, perturbation_model=AdditivePerturbation(IMAGES), restarts=2, lr=0.1),
         ValueError, "gradient_ascent: restarts=2 needs perturbation_model as a class or partial"),
        (lambda: gradient_ascent(**BASE, perturbation_model=partial(AdditivePerturbation, delta_ndim=-1), restarts=2,
                                 lr=0.1),
         ValueError, "gradient_ascent: restarts=2 runs the restarts as one batch of 12 data, so each parameter"),
        (lambda: gradient_ascent(**{**BASE, "data": torch.tensor(1.0), "target": 0.0}, criterion=lambda o, y: o,
                                 restarts=2, lr=0.1),
         ValueError, "gradient_ascent: restarts=2 needs data with a batch dim (dim 0), got a 0-dim tensor"),
        (lambda: gradient_ascent(**{**BASE, "optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)}),
         TypeError, "gradient_ascent: a built optimizer needs a built perturbation_model"),
        (lambda: gradient_ascent(**{**BASE, "optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)},
                                 perturbation_model=AdditivePerturbation(IMAGES), lr=0.1),
         TypeError, "gradient_ascent: optimizer arguments ['lr'] were given with an already built optimizer"),
        (lambda: random_restart(gradient_ascent, 0), ValueError,
         "random_restart: repeats must satisfy repeats >= 1, got 0"),
        (lambda: random_restart("solver", 2), TypeError, "random_restart: solver must be callable, got 'solver'"),
        (lambda: AdditivePerturbation(IMAGES, delta_ndim=5), ValueError,
         "AdditivePerturbation: delta_ndim must satisfy |delta_ndim| <= 4 (the data's number of dims, "
         "shape (6, 3, 5, 5)), got 5"),
        (lambda: AdditivePerturbation(IMAGES, delta_ndim=1.0), TypeError,
         "AdditivePerturbation: delta_ndim must be an int or None, got 1.0"),
        (lambda: AdditivePerturbation(IMAGES, epsilon=1.0), TypeError,
         "AdditivePerturbation: init_fn arguments ['epsilon'] were given without an init_fn"),
        (lambda: AdditivePerturbation(3), TypeError, "AdditivePerturbation: data_or_shape must be a Tensor or"),
    ],
)
def test_bad_arguments_raise_naming_the_api_the_argument_and_the_value(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value).startswith(message)


# -- torchattacks: the same attack written with paramtx gives the same adversarial images ---------------------

def _attack_both(attack_name, paramtx_optimizer, epsilon, alpha, steps=6):
    """torchattacks' attack (no random start) and gradient_ascent on the same float64 model and images."""
    torchattacks = pytest.importorskip(
        "torchattacks", reason="torchattacks is a test extra: pip install --no-deps torchattacks")
    images, labels = _data(torch.float64)
    cnn = _cnn(torch.float64)
    settings = {"eps_for_division": 0.0} if attack_name == "PGDL2" else {}
    attack = getattr(torchattacks, attack_name)(cnn, eps=epsilon, alpha=alpha, steps=steps, random_start=False,
                                                **settings)
    theirs = attack(images, labels)
    ours, _ = gradient_ascent(model=cnn, data=images, target=labels, steps=steps,
                              optimizer=paramtx_optimizer(images, epsilon, alpha))
    return ours, theirs, images


def _linf_pgd(images, epsilon, alpha):
    # sign of the gradient, a step of alpha, then the projection onto the L-inf ball intersect the image box
    box = {"lower": -images, "upper": 1 - images}
    return partial(GradientTransformationOptimizer, tx=ptx.sign(), InnerOpt=torch.optim.SGD, lr=alpha,
                   projection=partial(ptx.project_linf_ball, epsilon=epsilon, **box))


def _l2_pgd_ball_then_box(images, epsilon, alpha):
    # torchattacks' order: onto the L2 ball, then clamped into the box (not the projection onto the intersection)
    def projection(params):
        return [torch.clamp(delta, -images, 1 - images) for delta in ptx.project_l2_ball(params, epsilon)]

    return partial(GradientTransformationOptimizer, tx=ptx.normalize(p=2), InnerOpt=torch.optim.SGD, lr=alpha,
                   projection=projection)


def test_linf_pgd_matches_torchattacks_pgd():
    ours, theirs, images = _attack_both("PGD", _linf_pgd, epsilon=0.03, alpha=0.01)
    # float64; torchattacks keeps x0 + delta, paramtx delta: they differ by the rounding of x0 + delta - x0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert not torch.allclose(ours, images)


def test_l2_pgd_matches_torchattacks_pgdl2():
    ours, theirs, images = _attack_both("PGDL2", _l2_pgd_ball_then_box, epsilon=0.5, alpha=0.15)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)  # as above, plus the norms' rounding
    assert not torch.allclose(ours, images)


def test_exact_l2_ball_intersect_box_stays_in_both_sets_where_ball_then_box_is_not_the_projection():
    images, labels = _data(torch.float64)
    epsilon = 0.5
    exact = partial(GradientTransformationOptimizer, tx=ptx.normalize(p=2), InnerOpt=torch.optim.SGD, lr=0.15,
                    projection=partial(ptx.project_l2_ball, epsilon=epsilon, lower=-images, upper=1 - images))
    x, _ = gradient_ascent(model=_cnn(torch.float64), data=images, target=labels, steps=6, optimizer=exact)
    assert ((x >= 0) & (x <= 1)).all()
    assert ((x - images).flatten(1).norm(dim=1) <= epsilon * (1 + 1e-12)).all()
