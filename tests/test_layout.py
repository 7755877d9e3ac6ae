"""The package's layout keeps its promises: layers import downwards only, with no cycle;
the torch.optim shims hold no tensor maths of their own; no process-wide mutable flag."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "paramtx"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The paramtx modules ``path`` imports (anywhere in it, functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_no_library_module_imports_the_public_facade():
    # paramtx/__init__.py re-exports the library; a module importing it would depend on everything
    assert {name for name, deps in GRAPH.items() if "paramtx" in deps and name != "paramtx"} == set()


def test_no_import_cycle_among_the_modules():
    visiting, done, cycles = set(), set(), []

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append(path[path.index(name):] + [name])
            return
        visiting.add(name)
        for dep in GRAPH[name]:
            visit(dep, path + [name])
        visiting.discard(name)
        done.add(name)

    for name in GRAPH:
        visit(name, [])
    assert cycles == []


def test_layers_import_downwards_only():
    # core <- lift <- transforms <- perturbations, optim <- the public perturbations package (attacks);
    # nothing below imports what is above it
    rank = {"paramtx._core": 0, "paramtx._lift": 1, "paramtx._transforms": 2, "paramtx._perturbations": 3, "paramtx.optim": 3,
            "paramtx.perturbations": 4}

    def layer(name: str):
        return next((value for prefix, value in rank.items() if name == prefix or name.startswith(prefix + ".")), None)

    for name, deps in GRAPH.items():
        if layer(name) is None:
            continue
        for dep in deps:
            if layer(dep) is not None:
                assert layer(dep) <= layer(name), f"{name} imports {dep}, a higher layer"


# Tensor methods and torch functions that compute: none of them in paramtx/optim.
MATH_METHODS = {
    "abs", "add", "add_", "addcmul_", "amax", "amin", "argmax", "clamp", "clamp_", "div", "div_", "exp", "gather",
    "lerp_", "log", "max", "min", "mul", "mul_", "neg", "norm", "pow", "scatter", "scatter_", "sign", "sign_",
    "sqrt", "sub", "sub_", "sum", "topk", "zero_", "where",
}
PLUMBING = {  # torch calls the shims may make: they move or create, they do not compute
    "no_grad", "enable_grad", "compile", "randint", "zeros", "is_compiling", "Generator",
}


def test_the_shims_hold_no_tensor_maths():
    offences = []
    for path in (PACKAGE / "optim").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name, base = node.func.attr, node.func.value
            on_torch = isinstance(base, ast.Name) and base.id == "torch" or (
                isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "torch"
            )
            if (on_torch and name not in PLUMBING) or (not on_torch and name in MATH_METHODS):
                offences.append(f"{path.name}:{node.lineno} {ast.unparse(node.func)}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Mult, ast.Div, ast.Pow)):
                offences.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            constants = isinstance(node, ast.BinOp) and all(isinstance(x, ast.Constant) for x in (node.left, node.right))
            if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div, ast.Pow)) and not constants:
                offences.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert offences == []


def test_no_process_wide_mutable_flag():
    # module-level dicts or lists that code assigns into are process-wide switches; use a
    # ContextVar or an argument (constant tables are fine: nothing assigns into them)
    offences = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        mutable = {
            target.id
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.Dict, ast.List, ast.Set))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
            for target in targets:
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id in mutable:
                    offences.append(f"{name}:{node.lineno} writes {target.value.id}")
    assert offences == []
