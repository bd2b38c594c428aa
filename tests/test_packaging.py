"""Packaging: a plain `pip install -e .` must not pull the attack libraries whose pins hold JupyterLab back, and the
Makefile must still install them so that every attack runs in CI (and torchattacks, the benchmarks' PGD peer, without
its unused requests pin)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=~!\[; ]", requirement, maxsplit=1)[0].lower()


def test_attack_libraries_with_holding_pins_are_extras_not_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    assert not base & {"torchattacks", "adv-lib", "visdom"}, base
    assert {"jupyterlab", "papermill", "foolbox"} <= base
    extras = project["optional-dependencies"]
    assert "spsa" not in extras  # SPSA is native
    assert [_name(r) for r in extras["trust-region"]] == ["adv-lib"]


def test_makefile_installs_the_backends_and_the_benchmark_peer_without_its_pins():
    recipe = re.search(r"^\$\(STAMP\): .*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert re.search(r"pip install .*--no-deps torchattacks==3\.5\.1", recipe)
    assert re.search(r"pip install .*-e '\.\[[^]]*trust-region[^]]*\]'", recipe)
