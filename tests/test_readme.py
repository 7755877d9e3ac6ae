"""The README's Python examples run as written (each after the quick start, which defines
``torch``, ``ptx``, ``tx``, ``params`` and ``grads``; the DDP sketch needs a process group)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
# (the DDP sketch needs a process group of several ranks: tests/test_distributed.py runs DDP)
RUNNABLE = [i for i, block in enumerate(BLOCKS) if "DistributedDataParallel" not in block]


def test_the_readme_has_its_examples():
    assert len(RUNNABLE) >= 5


@pytest.mark.parametrize("index", RUNNABLE)
def test_readme_example_runs(index):
    block = BLOCKS[index]
    namespace: dict = {}
    with torch.device("cpu"):  # the README's examples are written for the CPU
        exec(compile(BLOCKS[0], "README.md (quick start)", "exec"), namespace)
        exec(compile(block, f"README.md (example {index + 1})", "exec"), namespace)
