"""``project_l1_ball`` with a box against AutoAttack's algorithm and optax's ``projection_l1_ball``.

Run: ``python benchmarks/bench_ball_box.py`` (add ``--quick`` for fewer repeats).

The workload is an L1 attack's projection step: ``delta`` (a batch of
perturbations, one per image) onto ``{||delta||_1 <= epsilon} ∩ [-x0, 1 - x0]``
per image, so that ``x0 + delta`` stays a valid image. Two sizes: B=256 images
of D=3072 (CIFAR) and B=16 of D=150528 (ImageNet). float32, 2 threads.

Peers, timed side by side in one process, round-robin (so a load on the
machine weighs on all alike); medians in milliseconds:

* **paramtx**: ``project_l1_ball(delta, epsilon, lower=-x0, upper=1 - x0)``,
  a bisection on the threshold with a fixed step count and an exact last step,
  ``O(D)`` per step, no sort.
* **AutoAttack's algorithm**: the exact projection as AutoAttack computes it
  (all ``2D`` breakpoints of the piecewise-linear norm sorted, its values at
  the breakpoints by cumulative sums, a binary search over them, then the
  threshold in closed form), written here for this benchmark only.
* **optax** ``projections.projection_l1_ball`` under ``jax.jit`` on the CPU,
  ``vmap``-ed over the images. It has **no box**: it solves the easier
  problem (the L1 ball alone), so its figure is a floor, not a like-for-like peer;
  paramtx's own L1 ball projection without a box (sort-based) is timed beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

import paramtx as ptx  # noqa: E402

SIZES = [(256, 3072, 12.0), (16, 150528, 60.0)]  # (images, values per image, L1 budget)


def autoattack_l1_box(delta: torch.Tensor, x0: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The projection of each row of ``delta`` onto the L1 ball ∩ [-x0, 1 - x0], by AutoAttack's method.

    Per element, along the sign of ``delta``: the magnitude ``clamp(|delta| - theta,
    0, cap)`` with ``cap`` the room to the box. The L1 norm is piecewise linear in
    theta with breakpoints ``|delta| - cap`` (the element leaves its cap) and
    ``|delta|`` (it reaches 0); sort them, accumulate the norm at each, binary-search
    the piece where it crosses ``epsilon``, and solve that piece for theta.
    """
    magnitude = delta.abs()
    cap = torch.where(delta >= 0, 1 - x0, x0)
    n, d = delta.shape
    # breakpoints (clamped to theta >= 0) and the slope change each brings
    points = torch.cat([(magnitude - cap).clamp(min=0), magnitude], dim=1)
    changes = torch.cat([-torch.ones_like(magnitude), torch.ones_like(magnitude)], dim=1)
    points, order = torch.sort(points, dim=1)
    slope = changes.gather(1, order).cumsum(dim=1)  # the slope just after each breakpoint
    start = torch.minimum(magnitude, cap).sum(dim=1, keepdim=True)  # the norm at theta = 0
    steps = torch.diff(points, dim=1, prepend=torch.zeros(n, 1))
    before = torch.cat([torch.zeros(n, 1), slope[:, :-1]], dim=1)  # the slope before each breakpoint
    norms = start + (before * steps).cumsum(dim=1)  # the norm at each breakpoint (falling)
    # binary search: the last breakpoint whose norm is still above epsilon
    low = torch.zeros(n, dtype=torch.long)
    high = torch.full((n,), 2 * d - 1, dtype=torch.long)
    rows = torch.arange(n)
    for _ in range(int(torch.ceil(torch.log2(torch.tensor(2.0 * d))))):
        mid = (low + high) // 2
        above = norms[rows, mid] > epsilon
        low, high = torch.where(above, mid, low), torch.where(above, high, mid)
    k = low.unsqueeze(1)
    theta = points.gather(1, k) + (norms.gather(1, k) - epsilon) / (-slope.gather(1, k)).clamp(min=1)
    theta = torch.where(start <= epsilon, torch.zeros_like(theta), theta)
    return torch.sign(delta) * torch.clamp(magnitude - theta, min=torch.zeros_like(cap), max=cap)


def optax_l1_ball(batch: int, size: int, epsilon: float):
    import jax
    import jax.numpy as jnp
    from optax import projections

    project = jax.jit(jax.vmap(lambda row: projections.projection_l1_ball(row, scale=epsilon)))
    key = jax.random.PRNGKey(0)
    delta = 0.05 * jax.random.normal(key, (batch, size), dtype=jnp.float32)

    def run():
        return project(delta).block_until_ready()

    return run


def measure(peers: dict, rounds: int) -> dict:
    """Median ms of each peer, timed one call at a time in round-robin order."""
    for fn in peers.values():  # warm-up (compiles jax's function)
        fn()
        fn()
    times = {name: [] for name in peers}
    for _ in range(rounds):
        for name, fn in peers.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f}\n")
    print("| B x D | paramtx L1 ∩ box | AutoAttack's algorithm | AutoAttack / paramtx | paramtx L1 (no box) "
          "| optax L1 (no box, jit) | optax / paramtx L1 (no box) | max abs diff vs AutoAttack |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, size, epsilon in SIZES:
        generator = torch.Generator().manual_seed(0)
        x0 = torch.rand(batch, size, generator=generator)
        delta = 0.05 * torch.randn(batch, size, generator=generator)
        ours = ptx.project_l1_ball(delta, epsilon, lower=-x0, upper=1 - x0)
        theirs = autoattack_l1_box(delta, x0, epsilon)
        difference = float((ours - theirs).abs().max())
        peers = {
            "paramtx": lambda: ptx.project_l1_ball(delta, epsilon, lower=-x0, upper=1 - x0),
            "autoattack": lambda: autoattack_l1_box(delta, x0, epsilon),
            "paramtx_ball": lambda: ptx.project_l1_ball(delta, epsilon),
            "optax": optax_l1_ball(batch, size, epsilon),
        }
        rounds = 5 if args.quick else (21 if size < 10_000 else 11)
        ms = measure(peers, rounds)
        print(f"| {batch} x {size} | {ms['paramtx']:.1f} | {ms['autoattack']:.1f} | {ms['autoattack'] / ms['paramtx']:.2f}x "
              f"| {ms['paramtx_ball']:.1f} | {ms['optax']:.1f} | {ms['optax'] / ms['paramtx_ball']:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
