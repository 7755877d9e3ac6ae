"""A perturbed shortest-path solver on a 9-node graph, and gradient ascent through it.

A shortest path is piecewise constant in the edge costs: its gradient is zero
almost everywhere. Perturbed, it becomes a smooth "soft path" (how often each
edge is used under noisy costs), which we differentiate with respect to four edge
costs to raise the use of the edge 6 -> 8. This is the shortest-path
demonstration of the perturbed-optimizers paper's reference implementation: the
graph has its topology, and the costs other than the four tuned ones are our
own, so the figures differ a little from that demonstration's.

Run: MPLBACKEND=Agg python examples/perturbed_shortest_path.py
(writes examples/out/shortest_path_before.png and shortest_path_after.png)
"""

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.lines import Line2D

import paramtx as ptx

OUT = Path(__file__).parent / "out"
N_NODES, SOURCE, TARGET = 9, 0, 8
# Node positions for the drawing: the four tuned edges form the top-right square 4-5-6-8.
POSITIONS = {0: (0, 0), 3: (1, 0), 1: (2, 0), 2: (0, 1), 5: (1, 1), 4: (2, 1), 7: (0, 2), 6: (1, 2), 8: (2, 2)}
FIXED_EDGES = {(0, 2): 0.1, (0, 3): 0.15, (2, 3): 0.1, (2, 7): 0.1, (3, 7): 0.1, (2, 5): 0.5,
               (7, 6): 0.1, (1, 4): 0.1, (1, 3): 0.8}
TUNED_EDGES = [(6, 8), (6, 5), (5, 4), (4, 8)]  # their costs are the 4 parameters
LABEL_AT = {(3, 7): 0.3}  # where along an edge its cost is written (default: the middle)


def undirected_matrix(edge_values):
    """(9, 9) matrix with value v at [i, j] and [j, i] for each edge (i, j): v."""
    matrix = torch.zeros(N_NODES, N_NODES)
    for (i, j), v in edge_values.items():
        matrix[i, j] = matrix[j, i] = v
    return matrix


ADJACENCY = undirected_matrix({e: 1.0 for e in [*FIXED_EDGES, *TUNED_EDGES]}).bool()
BASE_WEIGHTS = undirected_matrix(FIXED_EDGES)
TUNED_BASIS = torch.stack([undirected_matrix({e: 1.0}) for e in TUNED_EDGES])  # (4, 9, 9)


def edge_costs_to_weights(costs):
    """The (9, 9) weights (weights[i, j]: cost of the move j -> i), differentiable in the 4 tuned costs."""
    return BASE_WEIGHTS + torch.einsum("e,eij->ij", costs, TUNED_BASIS)


def shortest_path(weights, adjacency):
    """Shortest paths from node 0 to node 8 for a batch of weights (M, 9, 9).

    Returns (M, 9, 9) with paths[m, i, j] = 1 if path m moves from j to i.
    Bellman-Ford over the edges in ``adjacency``; costs are clamped at 0 (a
    perturbation can make one negative), which keeps the problem well posed.
    """
    m = weights.shape[0]
    cost = torch.where(adjacency, weights.clamp_min(0.0), torch.inf)
    dist = torch.full((m, N_NODES), torch.inf)
    dist[:, SOURCE] = 0.0
    pred = torch.full((m, N_NODES), -1)
    for _ in range(N_NODES - 1):
        best, via = (dist[:, None, :] + cost).min(-1)  # reach i through j
        better = best < dist
        dist, pred = torch.where(better, best, dist), torch.where(better, via, pred)
    paths = torch.zeros(m, N_NODES, N_NODES)
    rows, node = torch.arange(m), torch.full((m,), TARGET)
    for _ in range(N_NODES - 1):  # walk back from the target
        back = pred[rows, node]
        on_path = (node != SOURCE) & (back >= 0)
        paths.index_put_((rows, node, back.clamp_min(0)), on_path.float(), accumulate=True)
        node = torch.where(on_path, back, node)
    return paths


# A few large chunks: the solver is a loop of small ops, so fewer calls are faster.
perturbed_shortest_path = ptx.perturbed(shortest_path, num_samples=100_000, sigma=0.05, batched=False, seed=0,
                                        chunk_size=50_000)


def draw(paths, costs, title, filename):
    weights = edge_costs_to_weights(costs.detach())
    use = (paths + paths.T).detach()
    hard = shortest_path(weights[None], ADJACENCY)[0]
    hard = hard + hard.T
    fig, ax = plt.subplots(figsize=(6, 6))
    for i in range(N_NODES):
        for j in range(i + 1, N_NODES):
            if not ADJACENCY[i, j]:
                continue
            (x0, y0), (x1, y1) = POSITIONS[i], POSITIONS[j]
            ax.plot([x0, x1], [y0, y1], color="0.85", lw=1, zorder=1)
            ax.plot([x0, x1], [y0, y1], color="tab:blue", lw=0.5 + 10 * use[i, j].item(), alpha=0.8, zorder=2)
            if hard[i, j] > 0:
                ax.plot([x0, x1], [y0, y1], "k--", lw=1, zorder=3)
            at = LABEL_AT.get((i, j), 0.5)
            ax.annotate(f"{weights[i, j].item():.2f}", (x0 + at * (x1 - x0), y0 + at * (y1 - y0)), fontsize=8,
                        ha="center", va="center", backgroundcolor="white", zorder=4)
    ends = {SOURCE: ("tab:green", "source"), TARGET: ("tab:red", "target")}
    for node, (x, y) in POSITIONS.items():
        colour, role = ends.get(node, ("white", None))
        ax.scatter([x], [y], s=400, color=colour, edgecolors="k", zorder=5)
        ax.annotate(str(node), (x, y), ha="center", va="center", zorder=6,
                    color="white" if role else "k", fontweight="bold" if role else "normal")
        if role:  # the source sits at the left edge of the drawing, the target at the right
            side = -1 if x == 0 else 1
            ax.annotate(role, (x + side * 0.17, y), ha="right" if side < 0 else "left", va="center", fontsize=9,
                        color=colour, fontweight="bold", zorder=6)
    legend = [
        Line2D([], [], color="tab:blue", lw=0.5 + 10 * 1.0, alpha=0.8, label="edge on every noisy path (use 1.0)"),
        Line2D([], [], color="tab:blue", lw=0.5 + 10 * 0.25, alpha=0.8, label="edge on 1 noisy path in 4 (use 0.25)"),
        Line2D([], [], color="k", ls="--", lw=1, label="shortest path without noise"),
        Line2D([], [], color="0.85", lw=1, label="edge (label: its cost)"),
    ]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    ax.set_xlim(-0.75, 2.75)
    ax.set_title(title + "\nwidth: how often an edge is on the perturbed shortest path", fontsize=10)
    ax.set_axis_off()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / filename, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print("wrote", OUT / filename)


torch.set_printoptions(precision=3, sci_mode=False, linewidth=120)
final_edges_costs = torch.tensor([0.4, 0.1, 0.1, 0.1], requires_grad=True)
weights = edge_costs_to_weights(final_edges_costs)
print("hard shortest path (paths[i, j] = 1: move j -> i)\n", shortest_path(weights[None].detach(), ADJACENCY)[0])
pert_paths = perturbed_shortest_path(weights, ADJACENCY)
print("perturbed shortest path\n", pert_paths.detach())
draw(pert_paths, final_edges_costs, f"before: weight of 6 -> 8 = {pert_paths[8, 6].item():.3f}",
     "shortest_path_before.png")

# The gradient of the weight of the edge 6 -> 8 w.r.t. the four tuned costs.
pert_paths[8, 6].backward()
print(f"weight of 6 -> 8 = {pert_paths[8, 6].item():.3f}, gradient w.r.t. the 4 costs = {final_edges_costs.grad}")

# 30 steps of gradient ascent on the four costs, fresh noise at every step.
costs = final_edges_costs.detach().clone().requires_grad_(True)
ascent_path = ptx.perturbed(shortest_path, num_samples=100_000, sigma=0.05, batched=False, chunk_size=50_000,
                            generator=torch.Generator().manual_seed(0))
optimizer = torch.optim.SGD([costs], lr=0.002)
for step in range(30):
    optimizer.zero_grad()
    weight_6_to_8 = ascent_path(edge_costs_to_weights(costs), ADJACENCY)[8, 6]
    (-weight_6_to_8).backward()  # ascent
    optimizer.step()
    if step % 5 == 0 or step == 29:
        print(f"step {step:2d}: weight of 6 -> 8 = {weight_6_to_8.item():.3f}, costs = {costs.detach()}")

final_paths = perturbed_shortest_path(edge_costs_to_weights(costs), ADJACENCY)
print(f"after 30 steps: weight of 6 -> 8 = {final_paths[8, 6].item():.3f}, costs = {costs.detach()}")
draw(final_paths, costs, f"after 30 steps: weight of 6 -> 8 = {final_paths[8, 6].item():.3f}",
     "shortest_path_after.png")
