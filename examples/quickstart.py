"""paramtx in ten lines: a normalized, constrained gradient step on a pytree of tensors."""

import torch

import paramtx as ptx

params = {"w": torch.ones(4, 3), "b": torch.zeros(3)}
grads = {"w": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), "b": torch.tensor([0.5, -1.0, 2.0])}

# Per datum (here: each row of w, each element of b): L2-normalize the gradient,
# take an SGD step, then project back into the L2 ball of radius 1.
tx = ptx.chain(ptx.normalize(p=2), ptx.sgd(lr=0.5), ptx.projected(ptx.project_l2_ball, epsilon=1.0))
state = tx.init(params)
updates, state = tx.update(grads, state, params)
params = ptx.apply_updates(params, updates)

print("row norms of w:", torch.linalg.vector_norm(params["w"], dim=1))
print("b:", params["b"])
