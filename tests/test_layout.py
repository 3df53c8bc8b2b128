"""The package layout's rules: one import name, the allowed import directions, no reaching into private names.

Every module of the repository's four packages is parsed (nothing imported), and each import it makes,
function bodies included, is checked against the direction its package's ``__init__`` docstring states.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The repository's folders and the import name each installs under.
FOLDERS = {"dynstudy": "dynstudy", "study": "dynstudy.study", "jobs": "dynstudy.jobs",
           "analysis": "dynstudy.analysis", "store_contract": "dynstudy.store_contract"}
STDLIB = set(sys.stdlib_module_names)


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the installed packages."""
    out = {}
    for folder, name in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


def imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for every import in ``path``; ``import a.b`` gives ("a.b", ())."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert node.level == 0, f"{path}: relative import; import as dynstudy.<package>"
            found.append((node.module, tuple(a.name for a in node.names)))
    return found


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, ``from package import module`` counted as the module."""
    known = set(modules())
    out = set()
    for module, names in imports(path):
        out.add(module)
        out |= {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
    return out


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


#: Package -> the dynstudy packages its modules may import (besides themselves).
ALLOWED_DYNSTUDY = {
    "dynstudy.store_contract": (),
    "dynstudy.analysis.kernels": (),
    "dynstudy.analysis.run": ("dynstudy.analysis.kernels", "dynstudy.store_contract"),
    "dynstudy.analysis.stats": ("dynstudy.analysis.kernels",),
    "dynstudy.analysis.pipeline": ("dynstudy.analysis.kernels", "dynstudy.analysis.run", "dynstudy.analysis.stats",
                                   "dynstudy.store_contract"),
    "dynstudy.analysis.report": ("dynstudy.analysis.kernels", "dynstudy.analysis.stats", "dynstudy.store_contract"),
    "dynstudy.jobs": ("dynstudy.analysis.kernels", "dynstudy.store_contract"),
}
#: Package -> third-party top-level modules it may import (None: any).
ALLOWED_THIRD_PARTY = {
    "dynstudy.store_contract": {"pyarrow"},
    "dynstudy.analysis.kernels": {"numpy", "scipy", "numba"},
}


def _package(module: str) -> str | None:
    return max((p for p in ALLOWED_DYNSTUDY if _within(module, [p])), key=len, default=None)


@pytest.mark.parametrize("module", sorted(m for m in modules() if _package(m)))
def test_imports_follow_the_allowed_directions(module):
    package = _package(module)
    path = modules()[module]
    dyn = {m for m in imported_modules(path) if _within(m, ["dynstudy"])}
    bad = sorted(m for m in dyn if not _within(m, (package, *ALLOWED_DYNSTUDY[package])) and m != "dynstudy")
    assert not bad, f"{module} imports {bad}; {package} may import only {ALLOWED_DYNSTUDY[package] or 'itself'}"
    third = ALLOWED_THIRD_PARTY.get(package)
    if third is not None:
        tops = {m.split(".")[0] for m in imported_modules(path)} - STDLIB - {"dynstudy"}
        assert tops <= third, f"{module} imports {sorted(tops - third)}; {package} may import only {sorted(third)}"


@pytest.mark.parametrize("module", sorted(m for m in modules() if _within(m, ["dynstudy.analysis"])))
def test_analysis_needs_neither_torch_nor_ray(module):
    tops = {m.split(".")[0] for m in imported_modules(modules()[module])}
    allowed_ray = module == "dynstudy.analysis.pipeline.ray_dispatch"  # only when an analysis goes to a cluster
    assert not tops & ({"torch", "torchvision", "timm"} | (set() if allowed_ray else {"ray"}))


def test_every_module_is_under_the_one_import_name():
    """No module imports the repository's folders by their own names (``import analysis``): only
    ``dynstudy.<package>``, which a user's folder of the same name cannot shadow."""
    paths = list(modules().values()) + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    bare = {f"{p.relative_to(ROOT)}: {m}" for p in paths for m, _ in imports(p)
            if m.split(".")[0] in {"analysis", "jobs", "study", "store_contract"}}
    assert not bare


def test_no_module_imports_another_modules_private_names():
    """``from dynstudy.x import _name`` and ``module._name`` on an imported dynstudy module are refused, in the
    packages and in the tests alike: a private name is its own module's business."""
    paths = list(modules().values()) + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    found = []
    for path in paths:
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dynstudy"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}: from {node.module} import {a.name}")
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("dynstudy"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "\n".join(found)


def test_every_package_says_what_it_holds():
    for module, path in modules().items():
        if path.name == "__init__.py" and module != "dynstudy.study.presets":
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and len(doc) > 40, f"{module}: its __init__ docstring says what the package holds"
