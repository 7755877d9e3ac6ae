"""A perturbed argmax next to the softmax it estimates: values and gradients.

With Gumbel noise of scale sigma, E[one_hot(argmax(theta + sigma Z))] is exactly
softmax(theta / sigma); the perturbed version gets there, and to its gradient,
from samples of the hard argmax only.

Run: MPLBACKEND=Agg python examples/perturbed_argmax.py
(writes examples/out/perturbed_argmax.png: values and gradients, perturbed against softmax)
"""

from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import paramtx as ptx

OUT = Path(__file__).parent / "out"
torch.set_printoptions(precision=4, sci_mode=False)
SIGMA = 0.5
N = 1_000_000


def argmax(x, axis=-1):
    """The one-hot of the largest entry: piecewise constant, zero gradient almost everywhere."""
    return F.one_hot(torch.argmax(x, dim=axis), x.shape[axis]).float()


theta = torch.tensor([-0.6, 1.9, -0.2, 1.1, -1.0])
print("argmax(theta)            ", argmax(theta))

# One example (no batch dim).
pert_argmax = ptx.perturbed(argmax, num_samples=N, sigma=SIGMA, noise="gumbel", batched=False, seed=0)
print("perturbed argmax(theta)  ", pert_argmax(theta))
print("softmax(theta / sigma)   ", F.softmax(theta / SIGMA, dim=-1))

# A batch of examples, each perturbed independently.
theta_batch = torch.tensor([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]], requires_grad=True)
print("\nargmax(theta_batch)\n", argmax(theta_batch))
pert_argmax = ptx.perturbed(argmax, num_samples=N, sigma=SIGMA, noise="gumbel", seed=1)
print("perturbed argmax(theta_batch)\n", pert_argmax(theta_batch))
print("softmax(theta_batch / sigma)\n", F.softmax(theta_batch / SIGMA, dim=-1))


# The decorator form; the ready-made ptx.perturbed_argmax is the same thing.
@ptx.perturbed(num_samples=N, sigma=SIGMA, noise="gumbel", seed=2)
def decorated_argmax(x, axis=-1):
    return F.one_hot(torch.argmax(x, dim=axis), x.shape[axis]).float()


print("decorated argmax(theta_batch)\n", decorated_argmax(theta_batch))
print("ptx.perturbed_argmax(theta_batch)\n", ptx.perturbed_argmax(theta_batch, num_samples=N, sigma=SIGMA, seed=3))

# Gradients of the norm of the output: a Monte-Carlo estimate against the softmax's.
torch.linalg.norm(pert_argmax(theta_batch)).backward()
grad_pert = theta_batch.grad.clone()
theta_batch.grad = None
torch.linalg.norm(F.softmax(theta_batch / SIGMA, dim=-1)).backward()
grad_soft = theta_batch.grad
print("\ngradient, perturbed\n", grad_pert)
print("gradient, softmax\n", grad_soft)
print("largest difference", (grad_pert - grad_soft).abs().max().item())


# The picture: for the first example, the hard argmax, the perturbed argmax and the
# softmax side by side (values), then the two gradients (the hard argmax has none).
fig, (ax_value, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.6))
positions = torch.arange(theta_batch.shape[1])
width = 0.27
with torch.no_grad():
    values = {
        "hard argmax": argmax(theta_batch[0]),
        f"perturbed argmax ({N:,} samples)": pert_argmax(theta_batch)[0],
        "softmax(theta / sigma)": F.softmax(theta_batch[0] / SIGMA, dim=-1),
    }
for offset, (label, value) in zip([-width, 0.0, width], values.items()):
    ax_value.bar(positions + offset, value, width, label=label)
ax_value.set(title="values, theta = [" + ", ".join(f"{v:.1f}" for v in theta_batch[0].tolist()) + "]", xlabel="entry", ylabel="value", xticks=positions)
ax_value.legend(fontsize=8)
ax_grad.bar(positions - width / 2, grad_pert[0], width, label="perturbed (Monte-Carlo estimate)")
ax_grad.bar(positions + width / 2, grad_soft[0], width, label="softmax (exact)")
ax_grad.axhline(0.0, color="0.5", lw=0.8)
ax_grad.set(title="gradient of ||output||, first example", xlabel="entry", ylabel="d ||output|| / d theta", xticks=positions)
ax_grad.legend(fontsize=8)
fig.tight_layout()
OUT.mkdir(exist_ok=True)
fig.savefig(OUT / "perturbed_argmax.png", dpi=120)
print("wrote", OUT / "perturbed_argmax.png")
