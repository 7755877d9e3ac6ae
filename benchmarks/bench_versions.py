"""This working tree's paramtx against an earlier one (by default 0.1.0), side by side in one run.

Run: ``python benchmarks/bench_versions.py [--baseline REF] [--rounds N] [--only W1,W3]``

The baseline's ``paramtx`` package is taken from git (``git archive REF
paramtx``) into a temporary folder. The two versions cannot share one process
(both are ``paramtx``), so each round starts one process per version, in
alternating order; each process times every case (the eager rows of
``bench_core.py`` and ``bench_optim.py``, through the public API only) and
reports its medians. The table gives, per case, the median over rounds of each
version's median step time (ms), and the ratio baseline / this tree (above 1:
this tree is faster). Rounds interleave the versions, so a load change on the
machine hits both alike. ``--keep-freed-memory`` takes the page faults of fresh
large tensors out of the figures: their cost varies with each process's heap
history by a third or more, between two runs of the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from functools import partial
from pathlib import Path

BASELINE = "6244b4a"  # paramtx 0.1.0 as it landed
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LR, EPSILON, Q = 0.1, 1.0, 0.9


def _cases():
    """(name, workload, factory(params, grads) -> step) through the public API of either version."""
    import paramtx as ptx
    import paramtx.optim as pto
    from workloads import functional_step, optimizer_step

    l2_chain = lambda: ptx.chain(ptx.normalize(2), ptx.sgd(LR), ptx.projected(ptx.project_l2_ball, epsilon=EPSILON))  # noqa: E731
    l2_then = lambda: ptx.chain(ptx.normalize(2), ptx.sgd(LR))  # noqa: E731
    project = partial(ptx.project_l2_ball, epsilon=EPSILON)
    functional = {
        "L2 normalize+project (projected in chain)": lambda p, g: functional_step(l2_chain(), p, g),
        "L2 normalize+project (project after apply)": lambda p, g: functional_step(l2_then(), p, g, project),
        "top-q q=0.9": lambda p, g: functional_step(ptx.chain(ptx.top_q(Q), ptx.sgd(LR)), p, g),
        "L1q Frank-Wolfe q=0.9": lambda p, g: functional_step(ptx.chain(ptx.lmo_l1q(Q), ptx.frank_wolfe(EPSILON)), p, g),
        "sign": lambda p, g: functional_step(ptx.chain(ptx.sign(), ptx.sgd(LR)), p, g),
        "Adam": lambda p, g: functional_step(ptx.adam(1e-3), p, g),
    }
    shims = {
        "L2ProjectedOptim": lambda ps: pto.L2ProjectedOptim(ps, epsilon=EPSILON, lr=LR),
        "TopQGradientOptimizer": lambda ps: pto.TopQGradientOptimizer(ps, q=Q, lr=LR),
        "L1qFrankWolfe": lambda ps: pto.L1qFrankWolfe(ps, q=Q, epsilon=EPSILON),
        "SignedGradientOptim": lambda ps: pto.SignedGradientOptim(ps, lr=LR),
        "L1NormedGradientOptim": lambda ps: pto.L1NormedGradientOptim(ps, lr=LR),
        "L2NormedGradientOptim": lambda ps: pto.L2NormedGradientOptim(ps, lr=LR),
        "LinfProjectedOptim": lambda ps: pto.LinfProjectedOptim(ps, epsilon=0.03, lr=LR),
        "ClampedGradientOptimizer": lambda ps: pto.ClampedGradientOptimizer(ps, clamp_min=-0.1, clamp_max=0.1, lr=LR),
        "L1FrankWolfe": lambda ps: pto.L1FrankWolfe(ps, epsilon=EPSILON),
        "L2FrankWolfe": lambda ps: pto.L2FrankWolfe(ps, epsilon=EPSILON),
        "LinfFrankWolfe": lambda ps: pto.LinfFrankWolfe(ps, epsilon=0.03),
    }
    rows = [
        ("W1", "functional", functional["L2 normalize+project (projected in chain)"], "L2 normalize+project (projected in chain)"),
        ("W1", "functional", functional["L2 normalize+project (project after apply)"], "L2 normalize+project (project after apply)"),
        ("W1", "functional", functional["top-q q=0.9"], "top-q q=0.9"),
        ("W1", "functional", functional["L1q Frank-Wolfe q=0.9"], "L1q Frank-Wolfe q=0.9"),
        ("W2", "functional", functional["top-q q=0.9"], "top-q q=0.9"),
        ("W3", "functional", functional["L2 normalize+project (projected in chain)"], "L2 normalize+project (projected in chain)"),
        ("W3", "functional", functional["L2 normalize+project (project after apply)"], "L2 normalize+project (project after apply)"),
        ("W3", "functional", functional["sign"], "sign"),
        ("W3", "functional", functional["Adam"], "Adam"),
    ]
    for name, make in shims.items():
        rows.append(("W1", "shim", lambda p, g, make=make: optimizer_step(make, p, g), name))
    for name in ("L2ProjectedOptim", "SignedGradientOptim", "TopQGradientOptimizer"):
        rows.append(("W3", "shim", lambda p, g, make=shims[name]: optimizer_step(make, p, g), name))
    rows.append(("W2", "shim", lambda p, g: optimizer_step(shims["TopQGradientOptimizer"], p, g), "TopQGradientOptimizer"))
    return rows


def child(tree: str, repeats: int, only: list[str]) -> None:
    """Time every case with the paramtx found first on ``tree``; print one JSON dict."""
    sys.path.insert(0, tree)
    sys.path.insert(1, str(HERE))
    import paramtx
    from workloads import WORKLOADS, make_tensors, median_ms

    assert Path(paramtx.__file__).resolve().is_relative_to(Path(tree).resolve()), paramtx.__file__
    data = {name: make_tensors(shapes) for name, shapes in WORKLOADS.items() if name in only}
    out = {}
    for workload, kind, factory, name in _cases():
        if workload not in only:
            continue
        params, grads = data[workload]
        out[f"{workload}|{kind}|{name}"] = median_ms(factory(params, grads), repeats=repeats if workload != "W2" else 5)
    print(json.dumps(out))


def _extract(ref: str, into: str) -> None:
    archive = subprocess.run(["git", "archive", ref, "paramtx"], cwd=ROOT, check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            # (the "data" filter, where this Python has it: no links or paths out of the folder)
            tar.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"git ref of the baseline (default {BASELINE}, 0.1.0)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per version (alternating)")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per case per process")
    parser.add_argument("--only", default="W1,W2,W3", help="workloads to run")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="tell glibc to keep freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_): "
        "no page faults on fresh large tensors, whose cost otherwise varies with the heap's history",
    )
    parser.add_argument("--child", nargs=3, metavar=("TREE", "REPEATS", "ONLY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2].split(","))
        return
    environment = dict(os.environ)
    if args.keep_freed_memory:
        environment.update(MALLOC_MMAP_THRESHOLD_="1073741824", MALLOC_TRIM_THRESHOLD_="17179869184")
    with tempfile.TemporaryDirectory() as old_tree:
        _extract(args.baseline, old_tree)
        trees = {"baseline": old_tree, "this tree": str(ROOT)}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                result = subprocess.run(
                    [sys.executable, __file__, "--child", trees[name], str(args.repeats), args.only],
                    check=True, capture_output=True, text=True, cwd=old_tree, env=environment,
                )
                runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
    import torch

    print(f"# paramtx {args.baseline} (baseline) vs this tree, side by side"
          + (" (glibc keeping freed memory)" if args.keep_freed_memory else ""))
    print(
        f"# torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; "
        f"{args.rounds} alternating processes per version, {args.repeats} steps each; medians (ms)"
    )
    print()
    print("| workload | path | case | baseline | this tree | baseline / this tree |")
    print("|---|---|---|---:|---:|---:|")
    for key in runs["this tree"][0]:
        old = statistics.median(run[key] for run in runs["baseline"])
        new = statistics.median(run[key] for run in runs["this tree"])
        workload, kind, name = key.split("|")
        print(f"| {workload} | {kind} | {name} | {old:.2f} | {new:.2f} | {old / new:.2f}x |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
