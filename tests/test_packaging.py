"""What an installed paramtx looks like from outside: a quiet import and complete metadata.

These run against the installed distribution (``importlib.metadata``), so they check
the wheel's metadata when run from an installed sdist (as ``.ci/run`` does).
"""

from __future__ import annotations

import site
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

# Simulate an install without numpy: torch probes its numpy bridge at import.
WITHOUT_NUMPY = "import sys; sys.modules['numpy'] = None; "


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_torch_alone_warns_at_import_without_numpy() -> None:
    # The premise of the next test: without numpy, torch's own import warns.
    result = run_python("-c", WITHOUT_NUMPY + "import torch")
    assert "Failed to initialize NumPy" in result.stderr


def test_import_paramtx_prints_nothing_without_numpy() -> None:
    # (with warnings as errors, a warning would also fail the import)
    result = run_python("-W", "error", "-c", WITHOUT_NUMPY + "import paramtx, paramtx.optim")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_import_paramtx_prints_nothing_with_numpy() -> None:
    pytest.importorskip("numpy")  # (a bare install has none: the test above is its case)
    result = run_python("-W", "error", "-c", "import numpy, paramtx, paramtx.optim")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_distribution_metadata_is_complete() -> None:
    meta = metadata.metadata("paramtx")
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    assert meta["Author"] or meta["Author-email"]
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Repository", "Changelog"} <= set(urls)
    torch_requirement = next(r for r in metadata.requires("paramtx") or [] if r.startswith("torch"))
    assert ">=" in torch_requirement, torch_requirement
    assert meta["Requires-Python"] == ">=3.10"


def test_the_version_is_the_metadata_version() -> None:
    import paramtx

    assert paramtx.__version__ == metadata.version("paramtx")


def test_type_checkers_find_the_installed_package() -> None:
    # mypy and pyright run no import hooks: they look for a package in each
    # site-packages directory and in the directories its .pth files list as paths
    # (lines starting with "import" they skip). An editable install must put the
    # package there, not behind an import hook, for them to see it.
    search = []
    for site_dir in map(Path, site.getsitepackages()):
        search.append(site_dir)
        for pth in sorted(site_dir.glob("*.pth")):
            lines = pth.read_text().splitlines()
            search += [Path(line.strip()) for line in lines if line.strip() and not line.startswith(("#", "import"))]
    found = [d for d in search if (d / "paramtx" / "__init__.py").is_file() and (d / "paramtx" / "py.typed").is_file()]
    assert found, f"no paramtx with py.typed in {search}"
