"""Griffe extension: read paramtx's docstrings as the API reference shows them.

The docstrings are written for ``help()`` and doctest as much as for the site
(Google style, reST roles). Before mkdocstrings parses one, this rewrites:

* ``Example:`` to ``Examples:``, so the doctest block renders as code;
* ``:func:`paramtx.x``` (any role) to a cross-reference ``[`x`][paramtx.x]``
  when the target is a public name, so a reference to a name that no page
  documents fails the strict build; a role naming a private helper becomes
  plain code;
* an ``Args:`` entry that documents several parameters at once
  (``a, b, c: as for ...``) to one entry per parameter.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from griffe import Extension, Object

PUBLIC_MODULES = ("paramtx", "paramtx.optim", "paramtx.perturbations")
ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([\w.]+)`")
NAMES_ONLY = re.compile(r"^\s+\**\w+(?:,\s*\**\w+)*,\s*$")
SHARED_ARGS = re.compile(r"^(?P<indent>\s+)(?P<names>\**\w+(?:,\s*\**\w+)+):(?P<rest>.*)$")


def _public_names() -> dict[str, str]:
    """Short name and full path -> full path, for every name the reference documents."""
    names: dict[str, str] = {}
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        names[module_name] = module_name
        for name in module.__all__:
            full = f"{module_name}.{name}"
            names[full] = full
            names.setdefault(name, full)  # a short name means the first module's
    return names


def _is_private(path: str) -> bool:
    return any(part.startswith("_") for part in path.split("."))


def _cross_reference(match: re.Match, public: dict[str, str]) -> str:
    target = match.group(1)
    short = target.rsplit(".", 1)[-1]
    if target in public:
        return f"[`{short}`][{public[target]}]"
    if target.startswith("paramtx.") and not _is_private(target):
        return f"[`{short}`][{target}]"  # a public path that nothing documents: the build fails
    return f"`{target}`"


def _split_shared_args(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        # "a, b,\n    c: description" -> one line before splitting
        while NAMES_ONLY.match(line) and index + 1 < len(lines):
            index += 1
            line = line.rstrip() + " " + lines[index].strip()
        match = SHARED_ARGS.match(line)
        if match:
            for name in re.split(r",\s*", match["names"]):
                out.append(f"{match['indent']}{name}:{match['rest']}")
        else:
            out.append(line)
        index += 1
    return "\n".join(out)


class ParamtxDocstrings(Extension):
    def __init__(self) -> None:
        super().__init__()
        self.public = _public_names()

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = obj.docstring.value
        text = re.sub(r"^(\s*)Example:$", r"\1Examples:", text, flags=re.MULTILINE)
        text = ROLE.sub(lambda match: _cross_reference(match, self.public), text)
        obj.docstring.value = _split_shared_args(text)
