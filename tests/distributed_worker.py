"""One rank of the 2-process gloo runs of ``test_distributed.py``.

Run as ``python tests/distributed_worker.py SCENARIO OUT_DIR`` with ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set (see :func:`launch`).
Each rank writes ``OUT_DIR/rank{r}.json``: a list of findings, each a dict
with a ``case`` name and what was compared; the test asserts on them. Every
reference is computed in this same process on the unsharded tensors, the
single-process computation.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

WORLD_SIZE = 2


# ----------------------------------------------------------------------------- launching


def launch(script: str, args: list[str], *, timeout: float = 120.0) -> list[subprocess.CompletedProcess]:
    """Run ``script`` as ranks 0 and 1 of a gloo group on the loopback interface; both
    are killed (and ``subprocess.TimeoutExpired`` raised) if not done within ``timeout`` s.

    The ranks meet through a file (no port to pick, so no race for a free one) and
    gloo's connections are pinned to ``lo`` (127.0.0.1), whatever the host name resolves to.
    """
    with tempfile.TemporaryDirectory() as rendezvous:
        env = dict(
            os.environ,
            PARAMTX_TEST_INIT_METHOD=f"file://{rendezvous}/store",
            WORLD_SIZE=str(WORLD_SIZE),
            GLOO_SOCKET_IFNAME="lo",
        )
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        return _run_ranks(script, args, env, timeout)


def _run_ranks(script: str, args: list[str], env: dict, timeout: float) -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(
            [sys.executable, script, *args],
            env=dict(env, RANK=str(rank)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(WORLD_SIZE)
    ]
    deadline, results = time.monotonic() + timeout, []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def init_group() -> int:
    """Join the gloo group described by the environment (see :func:`launch`); returns this rank."""
    dist.init_process_group(
        "gloo",
        init_method=os.environ["PARAMTX_TEST_INIT_METHOD"],
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=datetime.timedelta(seconds=60),
    )
    return dist.get_rank()


# ----------------------------------------------------------------------------- comparisons


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def finding(case: str, got: torch.Tensor, want: torch.Tensor, **extra: Any) -> dict:
    """Compare ``got`` with ``want``: shapes, exact zero pattern, closeness."""
    same_shape = tuple(got.shape) == tuple(want.shape)
    return {
        "case": case,
        "same_shape": same_shape,
        "same_zeros": same_shape and bool(torch.equal(got == 0, want == 0)),
        "max_diff": max_diff(got, want) if same_shape else float("inf"),
        "max_abs": want.abs().max().item() if want.numel() else 0.0,
        **extra,
    }


# ----------------------------------------------------------------------------- scenario: DTensor


def _dtensor_cases():
    """(shape, placement name, param_ndim) triples: Shard(0) for every param_ndim,
    every placement of a 1-D mesh for ``param_ndim=None``, and ``Partial`` for
    ``param_ndim=0``."""
    shapes = [(5, 6), (4, 3, 2), (7,), (6, 2, 2, 3)]
    for shape in shapes:
        for param_ndim in (None, -1, 1):
            yield shape, "Shard(0)", param_ndim
        for name in [f"Shard({d})" for d in range(1, len(shape))] + ["Replicate", "Partial"]:
            yield shape, name, None
        yield shape, "Partial", 0  # data of one element each, pending a sum


def _distribute(x: torch.Tensor, mesh, name: str):
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    if name == "Partial":  # rank r holds a part; the parts sum to x
        weight = 0.25 if dist.get_rank() == 0 else 0.75
        return DTensor.from_local(x * weight, mesh, [Partial()], run_check=False)
    placement = Replicate() if name == "Replicate" else Shard(int(name[6:-1]))
    return distribute_tensor(x, mesh, [placement])


def scenario_dtensor(rank: int) -> list[dict]:
    """Every transform of the registry, on DTensors vs on the unsharded tensors."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    from paramtx._lift import sharded
    from paramtx._transforms.lmo import L1_LMO
    from paramtx._transforms.normalize import NORMALIZE
    from paramtx._transforms.projections import L1_BALL, L2_BALL
    from paramtx._transforms.top_q import TOP_Q

    from transforms_registry import ENTRIES

    mesh = init_device_mesh("cpu", (WORLD_SIZE,))
    findings = []
    for case_index, (shape, placement, param_ndim) in enumerate(_dtensor_cases()):
        generator = torch.Generator().manual_seed(case_index)
        grads = torch.randn(shape, generator=generator, dtype=torch.float64)
        params = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.3
        d_grads, d_params = _distribute(grads, mesh, placement), _distribute(params, mesh, placement)
        tag = f"{shape}/{placement}/param_ndim={param_ndim}"
        # The routes: data split across ranks have their norms reduced across shards, and
        # are gathered for sorts, top-k and argmax; whole data are computed on the shards.
        datum_dims = len(shape) if param_ndim is None else param_ndim if param_ndim >= 0 else len(shape) + param_ndim
        findings.append(
            {
                "case": f"route/{tag}",
                "datum_dims": datum_dims,
                "datum_split": placement == "Partial"
                or (placement.startswith("Shard") and int(placement[6:-1]) >= len(shape) - datum_dims),
                "routes": {
                    op.name: sharded.route(op, d_grads, param_ndim) for op in (NORMALIZE, L2_BALL, TOP_Q, L1_LMO, L1_BALL)
                },
            }
        )
        for entry in ENTRIES:
            if placement != "Shard(0)" and not entry.per_datum:
                continue  # an element-wise map sees no datum: one placement is enough
            tx = entry.build(param_ndim)
            want, want_state = tx.update(grads, tx.init(params), params)
            got, got_state = tx.update(d_grads, tx.init(d_params), d_params)
            got2, _ = tx.update(got, got_state, d_params)  # a second step: state carried over
            want2, _ = tx.update(want, want_state, params)
            for step, (g, w) in enumerate([(got, want), (got2, want2)]):
                findings.append(
                    finding(
                        f"{entry.name}/{tag}/step{step}",
                        g.full_tensor() if isinstance(g, DTensor) else g,
                        w,
                        dtensor=isinstance(g, DTensor),
                        placements=[str(pl) for pl in g.placements] if isinstance(g, DTensor) else None,
                        input_placements=[str(pl) for pl in d_grads.placements],
                    )
                )
    return findings + _tensor_settings_findings(mesh)


def _tensor_settings_findings(mesh) -> list[dict]:
    """Settings with one value per datum (every op of ``test_tensor_settings.OPS``) or per
    element (the box of the ball ∩ box projections), on DTensors vs on the unsharded tensor."""
    from torch.distributed.tensor import DTensor

    import paramtx as ptx
    from test_tensor_settings import OPS

    box = {
        "l1_ball_box": lambda x, s, nd, lo: ptx.project_l1_ball(x, s, param_ndim=nd, lower=lo, upper=lo + 1),
        "l2_ball_box": lambda x, s, nd, lo: ptx.project_l2_ball(x, s, param_ndim=nd, lower=lo, upper=lo + 1),
        "linf_ball_box": lambda x, s, nd, lo: ptx.project_linf_ball(x, s, param_ndim=nd, lower=lo, upper=lo + 1),
    }
    findings = []
    for case_index, shape in enumerate([(5, 6), (4, 3, 5), (3, 2, 2, 3)]):
        for placement in [f"Shard({d})" for d in range(len(shape))] + ["Replicate", "Partial"]:
            for param_ndim in (-1, 1):
                generator = torch.Generator().manual_seed(100 + case_index)
                x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2
                lower = -torch.rand(shape, generator=generator, dtype=torch.float64)
                datum_dims = len(shape) + param_ndim if param_ndim < 0 else param_ndim
                batch = shape[: len(shape) - datum_dims]
                unit = torch.rand(batch, generator=generator, dtype=torch.float64)
                d_x = _distribute(x, mesh, placement)
                calls = {name: (lambda x, s, nd, lo, call=call: call(x, s, nd), r) for name, (call, r) in OPS.items()}
                calls.update({name: (call, (0.2, 3.0)) for name, call in box.items()})
                for name, (call, (low, high)) in calls.items():
                    budgets = low + (high - low) * unit
                    got, want = call(d_x, budgets, param_ndim, lower), call(x, budgets, param_ndim, lower)
                    findings.append(
                        finding(
                            f"settings/{name}/{shape}/{placement}/param_ndim={param_ndim}",
                            got.full_tensor() if isinstance(got, DTensor) else got,
                            want,
                            dtensor=isinstance(got, DTensor),
                            placements=[str(pl) for pl in got.placements] if isinstance(got, DTensor) else None,
                            input_placements=[str(pl) for pl in d_x.placements],
                        )
                    )
    return findings


# ----------------------------------------------------------------------------- scenarios: training

BATCH, STEPS = 8, 3


def make_model() -> torch.nn.Module:
    """The same small model on every rank and in the single-process reference."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def full_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 6, generator=generator), torch.randn(BATCH, 3, generator=generator)


def shard_of(batch: torch.Tensor, rank: int) -> torch.Tensor:
    return batch.chunk(WORLD_SIZE)[rank]


def optimizers() -> dict[str, Callable[[Any], torch.optim.Optimizer]]:
    from paramtx.optim import L1qFrankWolfe, L2ProjectedOptim, TopQGradientOptimizer

    return {
        "L2ProjectedOptim": lambda ps: L2ProjectedOptim(ps, epsilon=0.8, lr=0.3),
        "TopQGradientOptimizer": lambda ps: TopQGradientOptimizer(ps, q=0.5, lr=0.3, momentum=0.9),
        "L1qFrankWolfe": lambda ps: L1qFrankWolfe(ps, q=0.5, epsilon=0.8),
    }


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: Optional[int]) -> None:
    """``STEPS`` steps of mean squared error; ``rank`` takes its half of each batch (``None``: all)."""
    for step in range(STEPS):
        inputs, targets = full_batch(step)
        if rank is not None:
            inputs, targets = shard_of(inputs, rank), shard_of(targets, rank)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()


def reference_params(make_optimizer) -> list[torch.Tensor]:
    """The single-process run on the full batches."""
    model = make_model()
    train(model, make_optimizer(model.parameters()), rank=None)
    return [p.detach().clone() for p in model.parameters()]


def scenario_ddp(rank: int) -> list[dict]:
    """The shims, unchanged, on a DistributedDataParallel model (gradients all-reduced by DDP)."""
    from torch.nn.parallel import DistributedDataParallel

    findings = []
    for name, make_optimizer in optimizers().items():
        model = DistributedDataParallel(make_model())
        train(model, make_optimizer(model.parameters()), rank)
        for index, (got, want) in enumerate(zip(model.module.parameters(), reference_params(make_optimizer))):
            findings.append(finding(f"{name}/param{index}", got.detach(), want))
    return findings


def scenario_fsdp(rank: int) -> list[dict]:
    """FSDP2 ``fully_shard`` (DTensor ``Shard(0)`` parameters, unevenly split), with the
    shims and with functional chains, per row and with data split across the shards
    (``param_ndim=None``)."""
    import paramtx as ptx
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from paramtx.optim import GradientTransformationOptimizer

    from paramtx.optim import L2ProjectedOptim, TopQGradientOptimizer

    cases = dict(optimizers())
    # data split across the shards: the shims' per-datum passes must span both ranks
    cases["L2ProjectedOptim param_ndim=None"] = lambda ps: L2ProjectedOptim(ps, epsilon=0.8, lr=0.3, param_ndim=None)
    cases["TopQGradientOptimizer param_ndim=None"] = lambda ps: TopQGradientOptimizer(
        ps, q=0.5, lr=0.3, param_ndim=None
    )
    cases["chain normalize/sgd/project_l2 param_ndim=None"] = lambda ps: GradientTransformationOptimizer(
        ps,
        ptx.chain(
            ptx.normalize(2, param_ndim=None),
            ptx.sgd(0.3, momentum=0.9),
            ptx.projected(ptx.project_l2_ball, epsilon=0.8, param_ndim=None),
        ),
    )
    # one radius per row (a plain tensor for the whole parameter): each rank uses its rows'
    def per_row_radii(ps):
        first, second = list(ps)[:2], list(ps)[2:]  # the two layers: 5 rows, 3 rows
        return L2ProjectedOptim(
            [
                {"params": first, "epsilon": torch.linspace(0.2, 1.0, 5)},
                {"params": second, "epsilon": torch.tensor([0.3, 0.6, 0.9])},
            ],
            epsilon=1.0,  # (the groups' own)
            lr=0.3,
        )

    cases["L2ProjectedOptim per-row epsilon"] = per_row_radii
    cases["chain lmo_l1/frank_wolfe param_ndim=None"] = lambda ps: GradientTransformationOptimizer(
        ps, ptx.chain(ptx.lmo_l1(param_ndim=None), ptx.frank_wolfe(0.8))
    )
    findings = []
    for name, make_optimizer in cases.items():
        model = make_model()
        fully_shard(model)
        train(model, make_optimizer(model.parameters()), rank)
        for index, (got, want) in enumerate(zip(model.parameters(), reference_params(make_optimizer))):
            findings.append(
                finding(f"{name}/param{index}", got.full_tensor(), want, dtensor=isinstance(got, DTensor))
            )
    return findings


# ----------------------------------------------------------------------------- main

SCENARIOS: dict[str, Callable[[int], list[dict]]] = {
    "dtensor": scenario_dtensor,
    "ddp": scenario_ddp,
    "fsdp": scenario_fsdp,
}


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    torch.manual_seed(0)
    rank = init_group()
    try:
        findings = SCENARIOS[scenario](rank)
        dist.barrier()  # every rank done with the group before any tears gloo down
    finally:
        dist.destroy_process_group()
        # Free what still holds the group (reference cycles of FSDP2's modules) while
        # Python is whole, not at its exit, where a gloo thread needing Python aborts
        # the process (see examples/distributed_training.py).
        gc.collect()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(findings))


if __name__ == "__main__":
    main()
