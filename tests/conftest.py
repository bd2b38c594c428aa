"""Shared fixtures: a small LeNet trained on real MNIST (mnist5k) once per test session, a scratch project, and a
study's training budget at half its default (for the ladder's budget keys)."""

from __future__ import annotations

import pytest
import torch

from advlib.data import load_dataset, to_tensors
from advlib.models import create_model
from advlib.params import TrainSpec
from advlib.train import ClassifierStep, fit


@pytest.fixture(scope="session")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    return to_tensors(load_dataset("mnist5k", "test"), n=200)


@pytest.fixture(scope="session")
def mnist_model() -> torch.nn.Module:
    """lenet5_classic, 2 epochs on the 4,000 mnist5k training images: about 95% test accuracy."""
    torch.manual_seed(0)
    model = create_model("lenet5_classic")
    fit(
        ClassifierStep(
            model, load_dataset("mnist5k", "train"), TrainSpec(model="lenet5_classic", epochs=2, batch_size=64)
        ),
        seed=0,
    )
    return model.eval()


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """An isolated project root and cache for tests that write files."""
    (tmp_path / "params").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("ADVLIB_HOME", str(tmp_path))
    monkeypatch.setenv("ADVLIB_CACHE", str(tmp_path / "artifacts"))
    monkeypatch.delenv("ADVLIB_FIGURES", raising=False)  # set by `make nbval` / `make reliability` for the notebooks
    return tmp_path


@pytest.fixture()
def halved_budget():
    """A function of a stem: its study's budget keys (`Study.budget`) at half their `default` values, at least 1,
    each checked to be a whole number there."""
    from advlib import params
    from advlib.ladder import study_class

    def halve(stem: str) -> dict[str, int]:
        default = params.load(stem, "default").model_dump()
        halves = {}
        for key in study_class(stem).budget:
            value = default
            for part in key.split("."):
                value = value[part]
            assert isinstance(value, int) and not isinstance(value, bool), key
            halves[key] = max(1, value // 2)
        return halves

    return halve
