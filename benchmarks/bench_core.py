"""paramtx's functional core vs rai-toolbox 0.2.1 vs a bare ``torch.optim.SGD(foreach=True)`` step.

Run: ``python benchmarks/bench_core.py`` (add ``--quick`` for fewer repeats).

Every row is one optimizer step on the workload (see ``workloads.py``):
the functional path runs ``tx.update`` + ``apply_updates`` (+ the projection),
rai-toolbox runs the same optimizer class's ``step()`` with the gradients
already in ``.grad``, and SGD is the bare ``torch.optim.SGD(foreach=True)``
step. All are timed side by side in this one process; the table gives medians
in milliseconds and the ratios rai / paramtx (speed-up) and paramtx / SGD.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

import paramtx as ptx  # noqa: E402
from workloads import WORKLOADS, functional_step, make_tensors, median_ms, optimizer_step  # noqa: E402

import rai_toolbox.optim as rai  # noqa: E402

LR, EPSILON, Q = 0.1, 1.0, 0.9


def cases():
    """(workload, transform name, paramtx step factory, rai-toolbox optimizer factory)."""
    l2_chain = ptx.chain(ptx.normalize(2), ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON))
    l2_then_project = ptx.chain(ptx.normalize(2), ptx.sgd(LR))
    project = lambda params: ptx.project_l2_ball(params, EPSILON)  # noqa: E731
    return [
        ("W1", "L2 normalize+project (projected in chain)", lambda p, g: functional_step(l2_chain, p, g),
         lambda ps: rai.L2ProjectedOptim(ps, lr=LR, epsilon=EPSILON)),
        ("W1", "L2 normalize+project (project after apply)", lambda p, g: functional_step(l2_then_project, p, g, project),
         lambda ps: rai.L2ProjectedOptim(ps, lr=LR, epsilon=EPSILON)),
        ("W1", "top-q q=0.9", lambda p, g: functional_step(ptx.chain(ptx.top_q(Q), ptx.sgd(LR)), p, g),
         lambda ps: rai.TopQGradientOptimizer(ps, q=Q, lr=LR)),
        ("W1", "L1q Frank-Wolfe q=0.9", lambda p, g: functional_step(ptx.chain(ptx.lmo_l1q(Q), ptx.frank_wolfe(EPSILON)), p, g),
         lambda ps: rai.L1qFrankWolfe(ps, q=Q, epsilon=EPSILON)),
        ("W2", "top-q q=0.9", lambda p, g: functional_step(ptx.chain(ptx.top_q(Q), ptx.sgd(LR)), p, g),
         lambda ps: rai.TopQGradientOptimizer(ps, q=Q, lr=LR)),
        ("W3", "L2 normalize+project (projected in chain)", lambda p, g: functional_step(l2_chain, p, g),
         lambda ps: rai.L2ProjectedOptim(ps, lr=LR, epsilon=EPSILON)),
        ("W3", "L2 normalize+project (project after apply)", lambda p, g: functional_step(l2_then_project, p, g, project),
         lambda ps: rai.L2ProjectedOptim(ps, lr=LR, epsilon=EPSILON)),
        ("W3", "sign", lambda p, g: functional_step(ptx.chain(ptx.sign(), ptx.sgd(LR)), p, g),
         lambda ps: rai.SignedGradientOptim(ps, lr=LR)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 7 if args.quick else 25

    data = {name: make_tensors(shapes) for name, shapes in WORKLOADS.items()}
    sgd_ms = {
        name: median_ms(
            optimizer_step(lambda ps: torch.optim.SGD(ps, lr=LR, foreach=True), *data[name]), repeats=repeats
        )
        for name in WORKLOADS
    }

    print("# paramtx functional core vs rai-toolbox 0.2.1 vs torch.optim.SGD(foreach=True)")
    print(f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; medians of {repeats} steps (ms)")
    print()
    print("| workload | transform | paramtx | rai-toolbox | SGD | rai / paramtx | paramtx / SGD |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for workload, name, make_ptx, make_rai in cases():
        params, grads = data[workload]
        ptx_ms = median_ms(make_ptx(params, grads), repeats=repeats)
        rai_ms = median_ms(optimizer_step(make_rai, params, grads), repeats=repeats)
        print(
            f"| {workload} | {name} | {ptx_ms:.2f} | {rai_ms:.2f} | {sgd_ms[workload]:.2f} "
            f"| {rai_ms / ptx_ms:.2f}x | {ptx_ms / sgd_ms[workload]:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
