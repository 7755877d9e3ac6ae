"""Shared test configuration: the device, the hypothesis profile and common fixtures.

Strategies and helpers live in ``ptx_testing.py``; the registries of every
transform, op and shim in ``transforms_registry.py``, ``ops_registry.py`` and
``shims_registry.py``.

Every test runs on the device named by ``PARAMTX_TEST_DEVICE`` (default ``cpu``):
on another device, it becomes torch's default device for each test, so tensors
a test creates land there; random data is drawn on the CPU and moved (the same
numbers on every device). The docstring examples run on the CPU, as they print.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from paramtx._lift.dense import vmap_reference
from ptx_testing import DEVICE

# No deadline: timings on a shared 2-core machine are noisy. 30 examples per
# property keeps the whole battery well under a minute and a half; CI can ask for
# more with HYPOTHESIS_PROFILE=thorough.
settings.register_profile(
    "paramtx",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("paramtx"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "paramtx"))


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(params=["rows", "vmap"])
def lifting(request):
    """Run the test under each lifting path of ``map_data``: row-batched, and the vmap reference."""
    if request.param == "vmap":
        with vmap_reference():
            yield request.param
    else:
        yield request.param


@pytest.fixture(autouse=True)
def _on_the_test_device():
    if DEVICE.type == "cpu":  # torch's default already (and setting it would slow every op)
        yield
        return
    torch.set_default_device(DEVICE)
    try:
        yield
    finally:
        torch.set_default_device(None)
