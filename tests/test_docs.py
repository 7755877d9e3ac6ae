"""The documentation site builds in strict mode, documents every public name, and its
examples run.

* ``mkdocs build --strict`` fails on any warning: a page missing from the nav, a
  broken link, a cross-reference (``[`x`][paramtx.x]``, or a docstring's
  ``:func:`paramtx.x```) to a name no page documents, a docstring mkdocstrings
  cannot parse.
* The reference pages are generated from each public module's ``__all__``
  (``docs/_hooks/reference.py``); the guard test checks the built site has an entry
  for every name of ``paramtx``, ``paramtx.optim`` and ``paramtx.perturbations``.
* Every ```` ```python ```` block of a page runs, in order, in one namespace per
  page (```` ```py ```` blocks are sketches that need a process group or compile
  for seconds, and are not run), except on the pages of ``EXCERPT_PAGES``, whose
  blocks are excerpts of a longer program set side by side with another library's.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_MODULES = ["paramtx", "paramtx.optim", "paramtx.perturbations"]
REFERENCE_PAGE = {"paramtx": "paramtx", "paramtx.optim": "optim", "paramtx.perturbations": "perturbations"}
PAGES = sorted(DOCS.rglob("*.md"))
# The paramtx and torchopt loops there are excerpts of examples/ensemble_training.py
# and its torchopt twin (torchopt is no test dependency).
EXCERPT_PAGES = {"coming_from_optax_torchopt.md"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs")  # (the test extra installs it; a bare GPU machine may lack it)
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return out


def test_the_site_builds_in_strict_mode(site: Path) -> None:
    for page in ["index.html", "param_ndim/index.html", "benchmarks/index.html", "reference/paramtx/index.html"]:
        assert (site / page).is_file(), page


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_has_a_reference_entry(site: Path, module_name: str) -> None:
    module = importlib.import_module(module_name)
    html = (site / "reference" / REFERENCE_PAGE[module_name] / "index.html").read_text()
    anchors = set(re.findall(r'id="([\w.]+)"', html))
    missing = [name for name in module.__all__ if f"{module_name}.{name}" not in anchors]
    assert module.__all__ and not missing, f"{module_name}: no reference entry for {missing}"


def test_the_benchmark_page_embeds_the_results(site: Path) -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    first_table_row = next(line for line in results.splitlines() if line.startswith("| "))
    first_cell = first_table_row.split("|")[1].strip()
    assert first_cell in (site / "benchmarks" / "index.html").read_text()


def test_the_param_ndim_figures_are_on_their_page(site: Path) -> None:
    html = (site / "param_ndim" / "index.html").read_text()
    for figure in ["param_ndim_matrix.png", "param_ndim_3d.png"]:
        assert figure in html and (site / "figures" / figure).is_file(), figure


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_guides_have_examples() -> None:
    for page in ["index.md", "param_ndim.md", "guides/functional.md", "guides/optim.md", "guides/perturbed.md"]:
        assert python_blocks(DOCS / page), page


RUNNABLE = [p for p in PAGES if python_blocks(p) and str(p.relative_to(DOCS)) not in EXCERPT_PAGES]


def test_the_excerpt_pages_exist() -> None:
    # (an exclusion that names no page would hide nothing, but says something wrong)
    assert all((DOCS / page).is_file() for page in EXCERPT_PAGES)


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(DOCS)))
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # rai-toolbox, on the rai-toolbox page
def test_page_examples_run(page: Path) -> None:
    namespace: dict = {}
    with torch.device("cpu"):  # the pages' examples are written for the CPU
        for index, block in enumerate(python_blocks(page)):
            exec(compile(block, f"{page.relative_to(ROOT)} (example {index + 1})", "exec"), namespace)
