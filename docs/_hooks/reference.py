"""MkDocs hook: the API reference pages list every public name by construction.

A reference page holds a marker line ``<!-- reference: paramtx.optim -->``; this
hook replaces it with one ``::: paramtx.optim.Name`` entry per name in that
module's ``__all__``, in its order, under the headings that the comments inside
the ``__all__`` list give (``# projections`` -> ``## Projections``). A public
name added to ``__all__`` is therefore documented at the next build with no
edit here; ``tests/test_docs.py`` checks the built site has an entry for each.
"""

from __future__ import annotations

import importlib
import io
import re
import tokenize
from pathlib import Path

MARKER = re.compile(r"^<!-- reference: ([\w.]+) -->$", flags=re.MULTILINE)
UNGROUPED = "Other public names"


def groups_of_all(module_name: str) -> list[tuple[str | None, list[str]]]:
    """``[(heading or None, [names])]`` in the order of the module's ``__all__``.

    The names are the module's runtime ``__all__``; the headings are the
    comments written inside the ``__all__ = [...]`` list of its source. Names
    the source list does not show (an ``__all__`` extended elsewhere) come last,
    under ``UNGROUPED``.
    """
    module = importlib.import_module(module_name)
    exported = list(module.__all__)
    groups: list[tuple[str | None, list[str]]] = [(None, [])]
    source = Path(module.__file__).read_text()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    inside = False
    for index, token in enumerate(tokens):
        if not inside:
            # `__all__ = [` (optionally annotated: `__all__: list[str] = [`)
            if token.type == tokenize.NAME and token.string == "__all__" and token.start[1] == 0:
                inside = True
            continue
        if token.type == tokenize.OP and token.string == "]":
            break
        if token.type == tokenize.COMMENT:
            groups.append((token.string.lstrip("#").strip(), []))
        elif token.type == tokenize.STRING:
            name = token.string.strip("\"'")
            if name in exported and all(name not in names for _, names in groups):
                groups[-1][1].append(name)
    listed = {name for _, names in groups for name in names}
    rest = [name for name in exported if name not in listed]
    if rest:
        groups.append((UNGROUPED, rest))
    return [(heading, names) for heading, names in groups if names]


def reference_markdown(module_name: str) -> str:
    lines: list[str] = []
    for heading, names in groups_of_all(module_name):
        if heading:
            lines += [f"## {heading[0].upper()}{heading[1:]}", ""]
        lines += [f"::: {module_name}.{name}\n" for name in names]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs' hook signature)
    return MARKER.sub(lambda match: reference_markdown(match.group(1)), markdown)
