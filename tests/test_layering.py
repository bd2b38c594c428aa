"""advlib's modules import only modules below them (README, "Code layout"): a fix in a lower module carries to every
paper, and no method module reaches up into protocol code. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "advlib"
# lowest first; a module may import modules of a lower rank, and anything inside its own package
RANKS = [
    {"schema", "files", "inference", "weights", "profiling"},
    {"runtime"},
    {"models", "data"},
    {"attacks"},
    {"params", "cache"},
    {"train"},
    {"defenses"},
    {"evaluate", "report", "claims", "human"},
    {"plots"},
    {"experiments"},
    {"golden", "portability", "preflight", "sweep", "jobs"},
    {"ladder"},
    {"cli"},
]
RANK = {name: rank for rank, names in enumerate(RANKS) for name in names}


def _imports(path: Path) -> set[str]:
    """The advlib top-level modules that the module at `path` imports (absolute or relative, anywhere in it)."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            names = [parts + [alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        found |= {n[1] for n in names if n[0] == "advlib" and len(n) > 1}
    return found


def test_every_module_has_a_rank():
    files = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    modules = files | packages
    assert modules == set(RANK), f"unranked: {sorted(modules - set(RANK))}; gone: {sorted(set(RANK) - modules)}"


def test_imports_point_down_only():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for target in _imports(path) - {own}:
            if RANK[target] >= RANK[own]:
                upward.append(f"{path.relative_to(ROOT.parent)} imports advlib.{target}")
    assert upward == []


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    module = tmp_path / "advlib" / "data.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from .experiments import regroup\n    from advlib import defenses\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "advlib"
    try:
        assert _imports(module) == {"experiments", "defenses"}
    finally:
        ROOT = saved
