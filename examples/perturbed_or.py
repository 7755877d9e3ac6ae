"""A perturbed OR of signs: its value and gradient over [-1, 1], saved as a PNG.

hard_or(x) is +1 if any entry of x is positive, else -1: flat, with a zero
gradient almost everywhere. Perturbed with Gumbel noise of scale sigma it becomes
smooth; for inputs (t, c) its value is 1 - 2 exp(-(exp(t / sigma) + exp(c / sigma))),
drawn below next to the Monte-Carlo estimates.

Run: MPLBACKEND=Agg python examples/perturbed_or.py   (writes examples/out/perturbed_or.png)
"""

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.func import grad, vmap

import paramtx as ptx

OUT = Path(__file__).parent / "out"
SIGMA = 0.1


def hard_or(x):
    """The OR of the signs along the last dim, as +1 / -1: (B, D) -> (B,)."""
    s = ((torch.sign(x) + 1) / 2.0).type(torch.bool)
    return torch.any(s, dim=-1).type(x.dtype) * 2.0 - 1


# Both inputs are "true", but the second is much closer to the fence: perturbed, it is less so.
theta = torch.tensor([[-5.0, 0.2], [-5.0, 0.1]])
pert_or = ptx.perturbed(hard_or, num_samples=1000, sigma=SIGMA, noise="gumbel", seed=0)
print("hard_or(theta)      ", hard_or(theta))
print("perturbed or(theta) ", pert_or(theta))
print("closed form         ", 1 - 2 * torch.exp(-torch.exp(theta / SIGMA).sum(-1)))

# The curve: inputs (t, c) for t in [-1, 1], one batch of 201 examples.
c = -0.2
t = torch.linspace(-1.0, 1.0, 201)
inputs = torch.stack([t, torch.full_like(t, c)], dim=-1)
soft_or = ptx.perturbed(hard_or, num_samples=20_000, sigma=SIGMA, noise="gumbel", seed=1)
value = soft_or(inputs)
# d value / d t per example: each example's value depends on its own input only.
slope = grad(lambda x: soft_or(x).sum())(inputs)[:, 0]

s = torch.exp(t / SIGMA) + torch.exp(torch.tensor(c / SIGMA))
exact_value = 1 - 2 * torch.exp(-s)
exact_slope = 2 * torch.exp(-s) * torch.exp(t / SIGMA) / SIGMA
print("largest error, value", (value - exact_value).abs().max().item())
print("largest error, slope", (slope - exact_slope).abs().max().item(), "(slope up to", exact_slope.max().item(), ")")

# The same under torch.func.vmap, one example at a time (batched=False).
one_or = ptx.perturbed(hard_or, num_samples=20_000, sigma=SIGMA, noise="gumbel", batched=False, seed=1)
slope_vmap = vmap(grad(one_or))(inputs)[:, 0]
print("vmap(grad) slope agrees with the closed form to", (slope_vmap - exact_slope).abs().max().item())

fig, (ax_value, ax_slope) = plt.subplots(1, 2, figsize=(10, 3.8))
# The estimate is drawn first and light, the closed form over it, dashed and dark,
# so both stay visible where they agree.
ax_value.plot(t, hard_or(inputs), color="0.6", lw=1.5, label="hard OR", zorder=1)
ax_value.plot(t, value, color="tab:blue", lw=3, alpha=0.45, label="perturbed, 20k samples", zorder=2)
ax_value.plot(t, exact_value, color="k", ls=(0, (4, 3)), lw=1.3, label="perturbed, closed form", zorder=3)
ax_value.set(title=f"OR(t, {c}), Gumbel noise, sigma={SIGMA}", xlabel="t", ylabel="value")
ax_value.legend(loc="lower right")
ax_slope.plot(t, torch.zeros_like(t), color="0.6", lw=1.5, label="hard OR (0 a.e.)", zorder=1)
ax_slope.plot(t, slope, color="tab:red", lw=3, alpha=0.45, label="perturbed estimate", zorder=2)
ax_slope.plot(t, exact_slope, color="k", ls=(0, (4, 3)), lw=1.3, label="closed form", zorder=3)
ax_slope.set(title="d OR / dt", xlabel="t", ylabel="gradient")
ax_slope.legend(loc="upper right")
fig.tight_layout()
OUT.mkdir(exist_ok=True)
fig.savefig(OUT / "perturbed_or.png", dpi=120)
print("wrote", OUT / "perturbed_or.png")
