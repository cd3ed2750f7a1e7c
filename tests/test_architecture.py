"""The package's shape is part of its contract: public names are never shadowed by submodules,
lower layers never import higher ones, no module imports another's private names, there are no
import cycles, and every exception lives in `semroute.errors` and is exported from `semroute`."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import semroute
import semroute.errors

PACKAGE = Path(semroute.__file__).parent

# Bottom to top. A module may import from its own layer or below, never above
# (ARCHITECTURE.md, "Layers").
LAYERS: list[set[str]] = [
    {"_version", "errors", "files", "ids"},
    {"config"},
    {"encoders", "state", "telemetry"},
    {"index", "outcomes"},
    {"providers"},
    {"routing"},
    {"policies"},
    {"dispatching"},
    {"quality"},
    {"cli", "gateway"},
]
LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def module_files() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def runtime_imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of every import executed at run time (not `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself: the public face, above everything
        return len(LAYERS)
    return LAYER_OF[parts[1]]


def test_every_subpackage_and_top_module_has_a_layer() -> None:
    tops = {m.split(".")[1] for m, _ in module_files() if "." in m}
    missing = sorted(tops - set(LAYER_OF))
    assert not missing, f"add {missing} to LAYERS and to ARCHITECTURE.md"


def test_lower_layers_never_import_higher_ones() -> None:
    violations = []
    for module, path in module_files():
        if module == "semroute":
            continue
        for line, target, _ in runtime_imports(path):
            if target.startswith("semroute.") and layer(target) > layer(module):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} "
                                  f"(layer {layer(module)}) imports {target} "
                                  f"(layer {layer(target)})")
    assert not violations, "\n".join(violations)


def test_no_module_imports_another_modules_private_names() -> None:
    violations = []
    for module, path in module_files():
        for line, target, names in runtime_imports(path):
            if not target.startswith("semroute"):
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private and target != module:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports "
                                  f"{', '.join(private)} from {target}")
            if any(p.startswith("_") and p != "_version" for p in target.split(".")[1:]):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports the "
                                  f"private module {target}")
    assert not violations, "\n".join(violations)


def test_no_import_cycles_between_modules() -> None:
    known = {m for m, _ in module_files()}
    graph: dict[str, set[str]] = {}
    for module, path in module_files():
        tree = ast.parse(path.read_text())
        # Module-level imports only: they are what runs when a module is first imported.
        deps = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in known else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[module] = {d for d in deps if d in known and d != module}

    # A package's __init__ importing its own submodules is the package's face, not a cycle;
    # a submodule importing its own package's face is the cycle we are looking for.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_readme_dispatch_example_keeps_semroute_dispatch_callable() -> None:
    """The bug: `from semroute.dispatch import Dispatcher` replaced the function `dispatch`."""
    code = ("import semroute\n"
            "import semroute.dispatching\n"
            "from semroute.dispatching import Dispatcher\n"
            "assert callable(semroute.dispatch), semroute.dispatch\n"
            "assert semroute.dispatch.__module__.startswith('semroute.dispatching')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_public_name_is_shadowed_by_importing_any_submodule_first() -> None:
    """Importing a submodule sets it as an attribute of its package: if a public name were
    also a submodule's name, whoever imported the submodule first would replace the name."""
    code = ("import importlib, pkgutil, types, semroute\n"
            "for m in pkgutil.walk_packages(semroute.__path__, prefix='semroute.'):\n"
            "    if not m.name.endswith('.__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "bad = [n for n in semroute.__all__\n"
            "       if isinstance(getattr(semroute, n), types.ModuleType)]\n"
            "assert not bad, f'public names shadowed by submodules: {bad}'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_subpackage_exports_a_name_that_is_also_its_submodule() -> None:
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="semroute."):
        if not info.ispkg:
            continue
        pkg = importlib.import_module(info.name)
        subs = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        clash = subs & set(getattr(pkg, "__all__", ()))
        assert not clash, f"{info.name} exports {sorted(clash)}, which are also submodules"


def test_public_api_is_listed_once_and_resolves() -> None:
    assert len(semroute.__all__) == len(set(semroute.__all__))
    assert sorted(dir(semroute)) == sorted(semroute.__all__)
    for name in semroute.__all__:
        assert getattr(semroute, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        semroute.nope  # noqa: B018


def _all_classes() -> Iterator[type]:
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="semroute."):
        if info.name.endswith(".__main__"):  # running it is its only job
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name:
                yield obj


def test_every_exception_lives_in_errors_and_is_exported() -> None:
    misplaced = sorted(f"{c.__module__}.{c.__qualname__}" for c in _all_classes()
                       if issubclass(c, BaseException) and c.__module__ != "semroute.errors")
    assert not misplaced, f"exceptions outside semroute/errors.py: {misplaced}"
    defined = {name for name, obj in vars(semroute.errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException | Warning)
               and obj.__module__ == "semroute.errors"}
    missing = defined - set(semroute.__all__)
    assert not missing, f"exceptions not exported from semroute: {sorted(missing)}"


def test_public_callables_are_fully_annotated() -> None:
    unannotated = []
    for name in semroute.__all__:
        obj = getattr(semroute, name)
        targets = [obj] if inspect.isfunction(obj) else [
            f for _, f in inspect.getmembers(obj, inspect.isfunction)
            if not f.__name__.startswith("_") or f.__name__ == "__init__"] \
            if inspect.isclass(obj) and not issubclass(obj, BaseException) else []
        for f in targets:
            sig = inspect.signature(f)
            params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
            if any(p.annotation is inspect.Parameter.empty for p in params) or \
                    (sig.return_annotation is inspect.Signature.empty and f.__name__ != "__init__"):
                unannotated.append(f"{name}.{f.__name__}")
    assert not unannotated, unannotated
