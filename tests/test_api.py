"""The Python API is as strict and as short as the CLI: validated spec dicts, keyword overrides for run_attack,
dicts for train_classifier, AttackResult.robust_accuracy, and the README's snippet runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from advlib.attacks import run_attack
from advlib.attacks.base import lp_norms
from advlib.attacks.registry import with_overrides
from advlib.train import train_classifier

ROOT = Path(__file__).resolve().parents[1]


def test_run_attack_takes_a_name_and_keyword_overrides(mnist_model, mnist_test):
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    torch.manual_seed(0)
    result = run_attack("pgd_linf", mnist_model, x, y, eps=0.3, steps=20)
    assert result.eps == 0.3 and float(lp_norms(result.x_adv - x, "linf").max()) <= 0.3 + 1e-6
    assert result.robust_accuracy == pytest.approx(1 - float(result.broken().float().mean()))
    clean = float((mnist_model(x).argmax(1) == y).float().mean())
    assert result.robust_accuracy < clean - 0.5  # an undefended model falls


def test_overrides_split_into_fields_and_options():
    spec = with_overrides(
        {"name": "pgd_linf", "eps": 0.1, "options": {"loss": "margin"}}, {"eps": 0.3, "update": "adam"}
    )
    assert spec == {"name": "pgd_linf", "eps": 0.3, "options": {"loss": "margin", "update": "adam"}}
    assert with_overrides("fgsm", {}) == {"name": "fgsm"}


@pytest.mark.parametrize(
    "spec, bad",
    [
        ({"name": "pgd_linf", "epss": 0.3}, "epss"),
        ({"name": "pgd_lnf"}, "pgd_lnf"),
        ({"name": "pgd_linf", "eps": -1}, "eps"),
    ],
)
def test_a_bad_spec_dict_is_an_error_naming_the_value(spec, bad, mnist_test):
    x, y = mnist_test[0][:4], mnist_test[1][:4]
    with pytest.raises(ValueError, match=re.escape(bad)):
        run_attack(spec, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), x, y)


def test_train_classifier_accepts_dicts_and_rejects_misspelled_keys(project):
    trained = train_classifier({"model": "lenet5", "epochs": 1, "batch_size": 64}, {"name": "mnist5k", "n_train": 128})
    assert trained.history and not trained.model.training
    with pytest.raises(ValidationError, match="epoch"):
        train_classifier({"model": "lenet5", "epoch": 1})


def test_readme_snippet_runs_as_printed(project, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    (project / "params").rmdir()
    (project / "params").symlink_to(ROOT / "params", target_is_directory=True)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = [float(v) for v in capsys.readouterr().out.split()]
    assert len(printed) == 2 and all(0 <= v <= 1 for v in printed)
    assert printed[0] < 0.2  # PGD eps 0.3 breaks an undefended LeNet
