"""Random restarts of an attack as one batch against a loop over restarts.

Run: ``python benchmarks/bench_attack.py`` (``--reps 3`` for a quick look).

The attack: L2 PGD (``paramtx.optim.L2ProjectedOptim``, epsilon 1.0, lr 0.25) on the
example CNN of ``examples/adversarial_perturbation.py`` (random weights: the time of a
step does not depend on them), ``--steps`` steps from ``--restarts`` random starts in
the L2 ball, for N images of shape (3, 24, 24); ``--model linear``: a linear classifier
on (3, 8, 8) images, where a step's cost is mostly per-call overhead. Three contenders, timed round-robin
(one call of each in turn, so a change of load hits all alike):

* ``paramtx batch``: ``gradient_ascent(..., restarts=R)``, the R x N data in one batch;
* ``paramtx batch, calls of 1``: the same with ``restarts_per_call=1``: the perturbation
  model and the optimizer on the whole stack, the model called on one restart at a time;
* ``paramtx loop``: R calls of ``gradient_ascent`` keeping the best per example (what
  ``random_restart`` does with a solver it cannot batch);
* ``rai-toolbox loop``: ``rai_toolbox.perturbations.random_restart(gradient_ascent, R)``.

Before timing, the batch and the loop are run from the same starts and their best
losses compared (they must agree to float32 rounding). The table gives medians in
milliseconds and the ratios against the batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial

import torch

from paramtx.optim import L2ProjectedOptim
from paramtx.perturbations import AdditivePerturbation, gradient_ascent, random_restart, uniform_like_l2_n_ball_

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from adversarial_perturbation import CLASSES, SIZE, make_model  # noqa: E402

EPSILON, LR = 1.0, 0.25


def _copy_(delta: torch.Tensor, source: torch.Tensor) -> None:
    delta.copy_(source)


def solvers(model, images, labels, restarts: int, steps: int) -> dict:
    settings = dict(model=model, data=images, target=labels, optimizer=L2ProjectedOptim, epsilon=EPSILON, lr=LR,
                    steps=steps)

    def starts(seed: int):
        return partial(AdditivePerturbation, init_fn=uniform_like_l2_n_ball_, epsilon=EPSILON,
                       generator=torch.Generator().manual_seed(seed))

    def batch():
        return gradient_ascent(**settings, perturbation_model=starts(0), restarts=restarts)

    def batch_calls_of_one():
        return gradient_ascent(**settings, perturbation_model=starts(0), restarts=restarts, restarts_per_call=1)

    def loop():  # a lambda hides gradient_ascent from random_restart, which then loops
        return random_restart(lambda **kw: gradient_ascent(**kw), restarts)(**settings, perturbation_model=starts(0))

    found = {"paramtx batch": batch, "paramtx batch, calls of 1": batch_calls_of_one, "paramtx loop": loop}
    try:
        import rai_toolbox.perturbations as rai
    except ImportError:
        print("rai-toolbox is not installed: its row is left out")
        return found

    def rai_loop():
        return rai.random_restart(rai.gradient_ascent, restarts)(
            **settings, perturbation_model=partial(rai.AdditivePerturbation, init_fn=rai.uniform_like_l2_n_ball_,
                                                   epsilon=EPSILON, generator=torch.Generator().manual_seed(0)))

    found["rai-toolbox loop"] = rai_loop
    return found


def check_same_best_losses(model, images, labels, restarts: int, steps: int) -> float:
    """Largest relative gap between the batch's and the loop's best losses, from the same starts."""
    starts = torch.empty(restarts * len(images), *images.shape[1:])
    uniform_like_l2_n_ball_(starts, epsilon=EPSILON, generator=torch.Generator().manual_seed(1))
    settings = dict(model=model, data=images, target=labels, optimizer=L2ProjectedOptim, epsilon=EPSILON, lr=LR,
                    steps=steps)
    _, batched = gradient_ascent(**settings, restarts=restarts,
                                 perturbation_model=partial(AdditivePerturbation, init_fn=_copy_, source=starts))
    best = None
    for part in starts.chunk(restarts):
        _, losses = gradient_ascent(**settings, perturbation_model=partial(AdditivePerturbation, init_fn=_copy_,
                                                                          source=part))
        best = losses if best is None else torch.maximum(best, losses)
    return ((batched - best).abs() / best.abs().clamp_min(1e-6)).max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["cnn", "linear"], default="cnn",
                        help="the example CNN on (3, 24, 24), or a linear classifier on (3, 8, 8) (overhead-bound)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = SIZE if args.model == "cnn" else 8
    model = make_model() if args.model == "cnn" else torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * size * size, len(CLASSES)))
    model.eval().requires_grad_(False)
    print(f"torch {torch.__version__}, {args.threads} threads; L2 PGD, {args.restarts} restarts x {args.steps} steps, "
          f"{args.model} on images (3, {size}, {size}), {len(CLASSES)} classes; medians of {args.reps} rounds, ms\n")
    rows = []
    for n in args.sizes:
        generator = torch.Generator().manual_seed(n)
        images = torch.rand(n, 3, size, size, generator=generator)
        labels = torch.randint(len(CLASSES), (n,), generator=generator)
        gap = check_same_best_losses(model, images, labels, args.restarts, args.steps)
        contenders = solvers(model, images, labels, args.restarts, args.steps)
        times = {name: [] for name in contenders}
        for name, solve in contenders.items():  # warm-up
            solve()
        for _ in range(args.reps):
            for name, solve in contenders.items():
                start = time.perf_counter()
                solve()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
        rows.append((n, gap, medians))
    names = list(rows[0][2])
    print("| N | " + " | ".join(names) + " | loop / batch | loop / calls of 1 | rai-toolbox / batch | best-loss gap |")
    print("|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|")
    for n, gap, medians in rows:
        batch, loop = medians["paramtx batch"], medians["paramtx loop"]
        rai = f"{medians['rai-toolbox loop'] / batch:.2f}x" if "rai-toolbox loop" in medians else "n/a"
        print(f"| {n} | " + " | ".join(f"{medians[name]:.1f}" for name in names)
              + f" | {loop / batch:.2f}x | {loop / medians['paramtx batch, calls of 1']:.2f}x | {rai} | {gap:.1e} |")


if __name__ == "__main__":
    main()
