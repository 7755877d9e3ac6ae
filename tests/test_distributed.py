"""paramtx under ``torch.distributed``: 2 gloo processes on 127.0.0.1.

Each scenario of ``distributed_worker.py`` runs once per module (both ranks as
subprocesses, killed after a hard timeout so a hang fails instead of blocking);
the ranks write what they compared and the tests here assert on it. The
single-process reference is computed inside each rank on unsharded tensors.

* DTensor: every transform of the registry on DTensors (1-D mesh of 2 ranks,
  float64) vs the unsharded tensor: ``Shard(0)`` for ``param_ndim`` in
  ``{None, -1, 1}``, and every placement (``Shard(d)`` for each dim,
  ``Replicate``, ``Partial``) for ``param_ndim=None``; shapes with even and
  uneven shards.
  Settings with one value per datum (or per element: a box) likewise, on every
  placement.
* DDP: ``L2ProjectedOptim``, ``TopQGradientOptimizer``, ``L1qFrankWolfe``,
  unchanged, on a ``DistributedDataParallel`` model vs one process on the
  full batch.
* FSDP2: the same shims, per row and (``L2ProjectedOptim``,
  ``TopQGradientOptimizer``) with ``param_ndim=None``, whose data span both
  ranks, ``L2ProjectedOptim`` with one radius per row (a tensor in each group),
  and two functional chains with ``param_ndim=None``, on a
  ``fully_shard``-ed model (uneven shards) vs one process.
* The example ``examples/distributed_training.py`` runs and reports agreement
  (its ranks stop by themselves: their gloo group times out after 60 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import distributed_worker

ROOT = Path(__file__).parent.parent
WORKER = Path(__file__).parent / "distributed_worker.py"
TIMEOUT = 120.0

EXACT_PREFIXES = ("top_q", "lmo_l1", "chain_topq", "fw_l1", "projected_l1")
"""Entries computed by gathering whole data (sort, top-k, argmax): bit-equal results."""


def run_scenario(scenario: str, tmp_path_factory) -> list[list[dict]]:
    out = tmp_path_factory.mktemp(scenario)
    try:
        procs = distributed_worker.launch(str(WORKER), [scenario, str(out)], timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scenario {scenario!r}: the 2 ranks did not finish within {TIMEOUT:.0f} s")
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} of {scenario!r} failed:\n{proc.stderr[-4000:]}"
    findings = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(len(procs))]
    assert len(findings[0]) == len(findings[1]) > 0
    return findings


@pytest.fixture(scope="module")
def dtensor_findings(tmp_path_factory):
    return run_scenario("dtensor", tmp_path_factory)


@pytest.fixture(scope="module")
def ddp_findings(tmp_path_factory):
    return run_scenario("ddp", tmp_path_factory)


@pytest.fixture(scope="module")
def fsdp_findings(tmp_path_factory):
    return run_scenario("fsdp", tmp_path_factory)


def comparisons(findings: list[list[dict]]) -> list[dict]:
    return [f for rank in findings for f in rank if "max_diff" in f]


def test_sharded_per_datum_results_equal_the_unsharded_computation(dtensor_findings):
    bad = [
        f
        for f in comparisons(dtensor_findings)
        if not (f["same_shape"] and f["dtensor"] and f["max_diff"] <= 1e-12 * max(1.0, f["max_abs"]))
    ]
    assert not bad, bad[:5]


def test_sharded_top_q_masks_lmos_and_l1_projections_are_exact(dtensor_findings):
    exact = [f for f in comparisons(dtensor_findings) if f["case"].startswith(EXACT_PREFIXES)]
    assert exact
    assert all(f["same_zeros"] for f in exact), [f for f in exact if not f["same_zeros"]][:5]
    # A Partial input is summed first, which may round: only shards and replicas are bit-equal.
    unsummed = [f for f in exact if "P(" not in str(f["input_placements"])]
    assert all(f["max_diff"] == 0.0 for f in unsummed), [f for f in unsummed if f["max_diff"]][:5]


def test_sharded_results_keep_the_input_placements(dtensor_findings):
    for f in comparisons(dtensor_findings):
        if f["input_placements"] == ["P(sum)"]:
            continue  # chains of linear steps may keep a pending sum; values are checked above
        assert f["placements"] == f["input_placements"], f


def test_partial_inputs_come_back_reduced(dtensor_findings):
    per_datum_maps = ("normalize", "top_q", "lmo_l1", "lmo_l2")
    partial = [
        f
        for f in comparisons(dtensor_findings)
        if f["input_placements"] == ["P(sum)"] and f["case"].startswith(per_datum_maps)
    ]
    assert partial and all(f["placements"] == ["R"] for f in partial)


def test_split_data_reduce_norms_across_shards_and_gather_only_for_sorts(dtensor_findings):
    routes = [f for f in dtensor_findings[0] if "routes" in f]
    assert any(f["datum_split"] for f in routes) and not all(f["datum_split"] for f in routes)
    for f in routes:
        if f["datum_split"]:
            # a datum of one element (pending a sum) has no dims to reduce a norm over
            norms = "reduce" if f["datum_dims"] > 0 else "gather"
            want = {
                "normalize": norms,
                "project_l2_ball": norms,
                "top_q": "gather",
                "lmo_l1": "gather",
                "project_l1_ball": "gather",
            }
        else:
            want = dict.fromkeys(f["routes"], "shards")
        assert f["routes"] == want, f


def test_settings_with_a_value_per_datum_or_element_are_cut_to_each_rank_s_data(dtensor_findings):
    # (their values are compared with the unsharded computation in the first test)
    from test_tensor_settings import OPS

    cases = [f for f in comparisons(dtensor_findings) if f["case"].startswith("settings/")]
    ops = {f["case"].split("/")[1] for f in cases}
    assert ops == set(OPS) | {"l1_ball_box", "l2_ball_box", "linf_ball_box"}
    assert {f["input_placements"][0] for f in cases} == {"S(0)", "S(1)", "S(2)", "S(3)", "R", "P(sum)"}
    assert all(f["dtensor"] and f["max_diff"] <= 1e-12 * max(1.0, f["max_abs"]) for f in cases)


def test_ddp_shims_equal_a_single_process_run_on_the_full_batch(ddp_findings):
    found = comparisons(ddp_findings)
    assert {f["case"].split("/")[0] for f in found} == {"L2ProjectedOptim", "TopQGradientOptimizer", "L1qFrankWolfe"}
    bad = [f for f in found if not (f["same_shape"] and f["max_diff"] <= 1e-5)]
    assert not bad, bad


def test_fsdp2_shims_and_chains_equal_a_single_process_run(fsdp_findings):
    found = comparisons(fsdp_findings)
    assert len({f["case"].split("/")[0] for f in found}) == 8
    bad = [f for f in found if not (f["same_shape"] and f["dtensor"] and f["max_diff"] <= 1e-5)]
    assert not bad, bad


def test_distributed_training_example_reports_agreement():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "distributed_training.py")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("rank ")]
    assert len(lines) == 4 and all(line.endswith("-> agree") for line in lines), proc.stdout
