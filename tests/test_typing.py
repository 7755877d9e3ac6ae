"""The package ships ``py.typed``, so its own annotations must type-check."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mypy_reports_no_errors_on_the_package(tmp_path: pathlib.Path) -> None:
    # The [tool.mypy] section of pyproject.toml says what to check and how.
    pytest.importorskip("mypy")  # (the test extra installs it; a bare GPU machine may lack it)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--cache-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"
