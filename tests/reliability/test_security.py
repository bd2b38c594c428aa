"""Weights load only from safetensors or torch.load(weights_only=True): a pickle with a code payload is refused
without running; parameters are YAML, never code; paths from parameters stay inside the project, data or cache."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from advlib import params, report
from advlib.models import create_model
from advlib.params import ParamsError
from advlib.weights import UnsafeWeightsError, load_state_dict

PACKAGE = Path(__file__).resolve().parents[2] / "advlib"


class _Payload:
    """Unpickling this runs os.system('touch <marker>'): the classic pickle exploit."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"fc.weight": torch.zeros(2, 2), "hook": _Payload(marker)}, path)
    return path


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, ledger):
    marker = tmp_path / "pwned"
    for suffix in (".pt", ".pth"):
        with pytest.raises(UnsafeWeightsError, match="refused"):
            load_state_dict(_crafted(tmp_path / f"evil{suffix}", marker))
        assert not marker.exists()
        ledger.record("security", f"pickle with a code payload ({suffix})", "refused, payload not run")


def test_crafted_pickle_in_the_torch_hub_cache_is_refused(tmp_path, monkeypatch, ledger):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "checkpoints" / "resnet50-0676ba61.pth", marker)
    with pytest.raises(UnsafeWeightsError, match="resnet50-0676ba61.pth"):
        create_model("resnet50_imagenet", weights="IMAGENET1K_V1")
    assert not marker.exists()
    ledger.record("security", "crafted file in place of torchvision's ImageNet weights", "refused, payload not run")


def test_plain_state_dicts_still_load(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(6.0).view(2, 3)}
    torch.save(state, tmp_path / "ok.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file(state, str(tmp_path / "ok.safetensors"))
    for name in ("ok.pt", "wrapped.pth", "ok.safetensors"):
        assert torch.equal(load_state_dict(tmp_path / name)["w"], state["w"])
    with pytest.raises(ValueError, match=r"suffix '.pkl'; allowed: .safetensors, .pt, .pth"):
        load_state_dict(tmp_path / "weights.pkl")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated or not a torch file"):
        load_state_dict(tmp_path / "cut.pt")


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']",
        "__import__('os').system('touch {marker}')",
    ],
)
def test_parameters_are_yaml_data_never_code(payload, tmp_path, ledger):
    marker = tmp_path / "pwned"
    text = payload.format(marker=marker)
    with pytest.raises(ParamsError):
        params.load("quickstart", "ci", [f"train.epochs={text}"])
    profile = tmp_path / "evil.yaml"
    profile.write_text(f"seed: {text}\n")
    with pytest.raises(ParamsError):
        params.load("quickstart", profile)
    assert not marker.exists()
    ledger.record("security", f"code in a parameter ({text.split()[0][:30]})", "refused, not run")


def test_no_code_evaluation_or_unsafe_loading_in_the_package(ledger):
    """Scan advlib's source: no eval/exec/compile, no pickle.load(s), yaml.load only as safe_load, torch.load only
    with weights_only=True."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if isinstance(func, ast.Name) and name in {"eval", "exec", "compile", "__import__"}:
                offences.append(f"{where} {name}()")
            if owner in {"pickle", "dill", "marshal"} and name in {"load", "loads"}:
                offences.append(f"{where} {owner}.{name}()")
            if owner == "yaml" and name in {"load", "unsafe_load", "full_load"}:
                offences.append(f"{where} yaml.{name}()")
            if owner == "torch" and name == "load":
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    offences.append(f"{where} torch.load() without weights_only=True")
    assert offences == []
    ledger.record("security", "source scan: eval/exec/pickle/yaml.load/torch.load", "none unsafe")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "results/../../../outside.csv", "link/answers.csv"])
def test_paths_from_parameters_cannot_escape_the_project(bad, project, tmp_path_factory, ledger):
    outside = tmp_path_factory.mktemp("outside")
    (project / "link").symlink_to(outside, target_is_directory=True)  # a symlink out of the project
    (project / "params" / "adversary_critic").mkdir()
    source = Path(__file__).resolve().parents[2] / "params" / "adversary_critic" / "ci.yaml"
    (project / "params" / "adversary_critic" / "ci.yaml").write_text(source.read_text())
    with pytest.raises(ParamsError, match=r"study.results .* outside the allowed directories"):
        params.load("adversary_critic", "ci", {"study.results": bad})
    inside = params.load("adversary_critic", "ci", {"study.results": "results/answers.csv"})
    assert inside.study.results == "results/answers.csv"
    ledger.record("security", f"parameter path {bad!r}", "refused")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs"])
def test_output_names_cannot_escape_the_figures_folder(name, ledger):
    with pytest.raises(ValueError, match="invalid output name"):
        report.check_name(name)
    ledger.record("security", f"output name {name!r}", "refused")
