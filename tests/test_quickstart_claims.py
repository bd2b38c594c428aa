"""The quickstart's claims: each can hold or fail on hand-made tables, and a miss carries a measured reason."""

import pandas as pd

from advlib import report
from advlib.experiments import quickstart


def _tables(eps_acc, steps_acc, pgd, fgsm, union):
    suite = pd.DataFrame(
        {"attack": ["clean", "fgsm@0.2", "pgd_linf@0.2", "pgd_l2@2"], "accuracy": [98.0, fgsm, pgd, 40.0]}
    )
    return {
        "attack_suite": suite,
        "accuracy_vs_eps": pd.DataFrame(
            {"attack": "pgd_linf", "eps": [0.05, 0.1, 0.2][: len(eps_acc)], "accuracy": eps_acc}
        ),
        "accuracy_vs_steps": pd.DataFrame(
            {"attack": "pgd_linf", "steps": range(len(steps_acc)), "accuracy": steps_acc}
        ),
        "union": quickstart.union_table(0.98, union / 100, 3),
    }


def _verdicts(tables, n=500):
    table = report.evaluate_claims(quickstart.claims(n_images=n), tables)
    return table.set_index("id")


def test_all_quickstart_claims_hold_on_a_sane_run():
    table = _verdicts(_tables([90.0, 60.0, 10.0], [98.0, 80.0, 30.0], pgd=10.0, fgsm=30.0, union=5.0))
    assert (table["verdict"] == report.HOLDS).all()
    assert (table["reason"] == "").all()
    assert table.loc["union_below_each", "cites"] == "union, attack_suite"


def test_each_quickstart_claim_can_fail_and_says_why():
    table = _verdicts(_tables([60.0, 62.0, 10.0], [98.0, 80.0, 85.0], pgd=35.0, fgsm=30.0, union=45.0), n=100)
    assert (table["verdict"] == report.DOES_NOT_HOLD).all()
    assert table.loc["eps_monotone", "reason"].startswith("largest rise +2.0 points from eps 0.05 to 0.1; gap +2.0")
    assert "inside the noise" in table.loc["eps_monotone", "reason"]
    assert (
        "gap +5.0 points" in table.loc["pgd_beats_fgsm", "reason"]
        and "on 100 images" in table.loc["pgd_beats_fgsm", "reason"]
    )
    assert "kept +15.0 points" in table.loc["union_below_each", "reason"]


def test_pgd_fgsm_claim_is_not_measured_without_a_common_eps():
    tables = _tables([90.0, 60.0], [98.0, 80.0], pgd=10.0, fgsm=30.0, union=5.0)
    tables["attack_suite"]["attack"] = ["clean", "fgsm@0.3", "pgd_linf@0.2", "pgd_l2@2"]
    row = _verdicts(tables).loc["pgd_beats_fgsm"]
    assert row["verdict"] == report.NOT_MEASURED and "common eps" in row["reason"]
