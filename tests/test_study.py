"""The shared experiment shape: derived cache keys, the generic training loop's checkpoints, and a Study's declared
artifacts published through `Run.artifact` (saved, paired with the paper, a missing result an error)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from advlib.cache import Trained, derive_key
from advlib.claims import NOT_MEASURED, Claim, Comparison
from advlib.experiments.base import MissingResult, Study, artifact
from advlib.params import AttackSpec, DataSpec, TrainSpec
from advlib.report import load_references
from advlib.runtime import Run
from advlib.train import GeneratorState, Step, fit

# -- derived cache keys ----------------------------------------------------------------------------


def test_keys_follow_every_identity_field_and_skip_the_declared_others():
    base = derive_key("model", train=TrainSpec(), data=DataSpec(n_train=100), seed=0)
    assert base.key == derive_key("model", seed=0, data=DataSpec(n_train=100), train=TrainSpec()).key  # order-free
    assert base.key == derive_key("model", train=TrainSpec(), data=DataSpec(n_train=100, download=True), seed=0).key
    changed = [
        derive_key("model", train=TrainSpec(), data=DataSpec(n_train=101), seed=0),
        derive_key("model", train=TrainSpec(augment="crop_flip"), data=DataSpec(n_train=100), seed=0),
        derive_key("model", train=TrainSpec(), data=DataSpec(n_train=100), seed=1),
        derive_key("adversarial", train=TrainSpec(), data=DataSpec(n_train=100), seed=0),
    ]
    assert len({base.key, *(k.key for k in changed)}) == 5
    assert "download" not in base.params["data"] and base.params["train"]["augment"] == "none"


def test_an_upstream_artifact_enters_a_key_by_its_own_key():
    upstream = Trained(model=nn.Linear(1, 1), history=[], key="abc")
    key = derive_key("adversarial", model=upstream, spec=AttackSpec(name="fgsm", eps=0.1))
    assert key.params["model"] == "abc"
    assert key.key != derive_key("adversarial", model="abd", spec=AttackSpec(name="fgsm", eps=0.1)).key
    assert key.key == derive_key("adversarial", model="abc", spec=AttackSpec(name="fgsm", eps=0.1)).key


def test_a_bad_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="'Model'"):
        derive_key("Model", a=1)


# -- the one training loop ------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


class DrawnBatches(Step):
    """A toy method whose batch order comes from one generator across epochs (like the mixture of generators)."""

    def __init__(self, epochs: int = 3) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.epochs = epochs
        self.order = torch.Generator().manual_seed(5)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.x = torch.randn(32, 4)
        self.state = {"model": self.model, "optimizer": self.optimizer, "order": GeneratorState(self.order)}

    def begin_epoch(self, epoch: int, seed: int) -> None:
        self.model.train()

    def num_batches(self) -> int:
        return 4

    def batches(self, epoch: int, seed: int):
        return torch.randperm(32, generator=self.order).split(8)

    def update(self, batch, epoch: int) -> dict[str, float]:
        loss = (self.model(self.x[batch]) - self.x[batch].sum(1, keepdim=True)).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}


def test_a_step_with_its_own_generator_resumes_to_identical_weights(tmp_path):
    reference = DrawnBatches()
    history = fit(reference, seed=0)

    def stop(epoch, model, record):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(DrawnBatches(), seed=0, checkpoint_dir=tmp_path, on_epoch=stop)
    resumed = DrawnBatches()
    assert fit(resumed, seed=0, checkpoint_dir=tmp_path) == history
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["loss"] < history[0]["loss"]
    for name, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert torch.equal(reference.order.get_state(), resumed.order.get_state())


def test_a_checkpoint_of_another_training_restarts_from_scratch(tmp_path, caplog):
    fit(DrawnBatches(epochs=1), seed=0, checkpoint_dir=tmp_path)
    other = DrawnBatches(epochs=1)
    other.state = {"model": other.model, "optimizer": other.optimizer}  # no generator: not this training's state
    assert [r["epoch"] for r in fit(other, seed=0, checkpoint_dir=tmp_path)] == [1]
    assert "corrupt" in caplog.text


# -- a study's declared artifacts -------------------------------------------------------------------------


class ToyStudy(Study):
    """Publishes Table 1 of the mixture-of-generators paper (fake numbers) to test pairing with its references."""

    stem = "mixture_of_generators"

    @artifact("table1", "Attack success (%).", pair=lambda t: t.set_index("attack")["success"])
    def table1(self) -> pd.DataFrame:
        return pd.DataFrame({"attack": ["FGSM", "made_up"], "success": [50.0, 1.0]})

    @artifact("plain", "A table without a reference.")
    def plain(self) -> pd.DataFrame:
        return pd.DataFrame({"a": [1.0]})

    @artifact("broken", "Not a table.")
    def broken(self) -> pd.DataFrame:
        return [1, 2]  # type: ignore[return-value]

    def claims(self) -> list[Claim]:
        return [
            Claim(
                "c",
                "FGSM succeeds (Table 1, plain).",
                ("table1", "plain"),
                lambda t: Comparison.exact(("rows", len(t["table1"])), ("plain rows", len(t["plain"])), ">=", 1),
            )
        ]


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLIB_FIGURES", str(tmp_path))
    return Run("mixture_of_generators", "ci", {"toy": True}, seed=0, device="cpu")


def test_run_artifact_saves_pairs_and_returns_the_table(run, tmp_path):
    study = ToyStudy({}, "cpu")
    assert set(ToyStudy.artifacts) == {"table1", "plain", "broken", "paper_vs_run", "claims"}
    table = run.artifact(study, "table1")
    assert list(table["attack"]) == ["FGSM", "made_up"]
    assert {p.name for p in (tmp_path / "mixture_of_generators" / "ci").iterdir()} >= {
        "table1.csv",
        "table1.md",
        "table1.tex",
    }
    assert "Attack success" in (tmp_path / "mixture_of_generators" / "ci" / "table1.tex").read_text()
    paired = study.references["table1"]
    published = load_references("mixture_of_generators")["table1"]["values"]["FGSM"]
    assert paired.loc["FGSM", "paper"] == published and paired.loc["FGSM", "run"] == 50.0
    assert math.isnan(paired.loc["made_up", "paper"])
    summary = run.artifact(study, "paper_vs_run")
    assert list(summary.index.get_level_values("artifact").unique()) == ["table1"]


def test_claims_need_every_cited_table_of_this_run(run):
    study = ToyStudy({}, "cpu")
    run.artifact(study, "table1")
    with pytest.raises(MissingResult, match="plain"):
        run.artifact(study, "claims")
    run.artifact(study, "plain")
    assert list(run.artifact(study, "claims")["verdict"]) == ["holds"]


def test_bad_artifact_requests_are_errors(run):
    study = ToyStudy({}, "cpu")
    with pytest.raises(KeyError, match="'table9'.*declared: paper_vs_run, claims, table1, plain, broken"):
        run.artifact(study, "table9")
    with pytest.raises(TypeError, match="'broken'.*list"):
        run.artifact(study, "broken")
    with pytest.raises(MissingResult, match="no artifact paired"):
        run.artifact(study, "paper_vs_run")
    with pytest.raises(MissingResult, match="'plain' has not been produced"):
        study.result("plain")


def test_a_cited_table_the_profile_cannot_produce_leaves_its_claim_not_measured(run):
    class WithoutPlain(ToyStudy):
        def producible(self) -> set[str]:
            return {"table1"}

    study = WithoutPlain({}, "cpu")
    with pytest.raises(MissingResult, match="table1"):
        run.artifact(study, "claims")
    run.artifact(study, "table1")
    assert list(run.artifact(study, "claims")["verdict"]) == [NOT_MEASURED]
