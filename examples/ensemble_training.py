"""Train an ensemble of 8 MLPs at once with torch.func and a paramtx chain.

The members' parameters are stacked along a leading dim, and one
``torch.func.vmap`` runs the whole training step (loss, gradient, transform,
update) for every member at once. The chain clips each member's gradient by its
global norm, adds weight decay to the weight matrices only (``masked``), and
takes an Adam step whose learning rate follows a warmup-cosine schedule,
evaluated at the step count the state holds (a tensor, so the step stays one
traced program). Each member starts from its own initialization and sees its
own bootstrap sample of the data; the ensemble's spread is their disagreement.

Run: ``python examples/ensemble_training.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

import paramtx as ptx

MEMBERS, STEPS, BATCH = 8, 400, 64


def make_data(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy 1-d regression problem: y = sin(3x) + x / 2 + noise on [-2, 2]."""
    x = torch.rand(512, 1, generator=generator) * 4 - 2
    y = torch.sin(3 * x) + x / 2 + 0.1 * torch.randn(512, 1, generator=generator)
    return x, y


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x, y = make_data(generator)
    # one bootstrap sample of the data per member: (MEMBERS, 512) indices
    samples = torch.randint(0, len(x), (MEMBERS, len(x)), generator=generator)

    models = [
        torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        for _ in range(MEMBERS)
    ]
    params, _ = stack_module_state(models)  # {"0.weight": (8, 32, 1), "0.bias": (8, 32), ...}
    params = {name: p.detach() for name, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")  # the architecture, without storage

    tx = ptx.chain(
        ptx.clip_by_global_norm(1.0),  # per member: vmap sees one member's tree
        ptx.masked(ptx.add_decayed_weights(1e-4), lambda p: {name: name.endswith("weight") for name in p}),
        ptx.adam(lr=ptx.warmup_cosine_decay_schedule(0.0, 3e-2, warmup_steps=40, decay_steps=STEPS, end_value=1e-4)),
    )

    def loss_fn(p: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(functional_call(base, p, (xb,)), yb)

    def step(p: dict, state, xb: torch.Tensor, yb: torch.Tensor):
        grads, loss = grad_and_value(loss_fn)(p, xb, yb)
        updates, state = tx.update(grads, state, p)
        return ptx.apply_updates(p, updates), state, loss

    ensemble_step = vmap(step)  # every argument has the member dim first
    state = vmap(tx.init)(params)

    for k in range(STEPS):
        batch = samples[:, torch.randint(0, len(x), (BATCH,), generator=generator)]  # (MEMBERS, BATCH)
        params, state, losses = ensemble_step(params, state, x[batch], y[batch])
        if k % 80 == 0 or k == STEPS - 1:
            lr = state[2].hyperparams["lr"][0]  # the schedule's value at this step, as the state holds it
            print(f"step {k:4d}  lr {float(lr):.5f}  loss: mean {losses.mean():.4f}, members {losses.min():.4f}..{losses.max():.4f}")

    grid = torch.linspace(-2, 2, 5).unsqueeze(-1)
    predictions = vmap(functional_call, in_dims=(None, 0, None))(base, params, (grid,)).squeeze(-1)  # (MEMBERS, 5)
    print("x:                ", [f"{v:+.2f}" for v in grid.squeeze(-1).tolist()])
    print("ensemble mean:    ", [f"{v:+.2f}" for v in predictions.mean(0).tolist()])
    print("ensemble std:     ", [f"{v:.2f}" for v in predictions.std(0).tolist()])
    print("sin(3x) + x / 2:  ", [f"{v:+.2f}" for v in (torch.sin(3 * grid) + grid / 2).squeeze(-1).tolist()])


if __name__ == "__main__":
    main()
