"""The quickstart's claims: each can hold or fail on hand-made tables, and a miss carries a measured reason."""

import pandas as pd

from advlib import claims as C
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
    table = C.evaluate_claims(quickstart.claims(n_images=n), tables)
    return table.set_index("id")


def test_all_quickstart_claims_hold_on_a_sane_run():
    table = _verdicts(_tables([90.0, 60.0, 10.0], [98.0, 80.0, 30.0], pgd=10.0, fgsm=30.0, union=5.0))
    assert (table["verdict"] == C.HOLDS).all()
    assert (table["reason"] == "").all()
    assert table.loc["union_below_each", "cites"] == "union, attack_suite"


def test_each_quickstart_claim_can_fail_and_says_why():
    table = _verdicts(_tables([60.0, 72.0, 10.0], [98.0, 80.0, 95.0], pgd=45.0, fgsm=30.0, union=55.0), n=500)
    assert (table["verdict"] == C.FAILS).all()
    assert "eps 0.1 72.0% vs eps 0.05 60.0%: +12.0" in table.loc["eps_monotone", "reason"]
    assert "pgd_linf@0.2 45.0% vs fgsm@0.2 30.0%: +15.0" in table.loc["pgd_beats_fgsm", "reason"]
    assert "on 500 images" in table.loc["pgd_beats_fgsm", "reason"]
    assert table.loc["union_below_each", "reason"].endswith("is a defect to report")


def test_a_small_sample_leaves_a_claim_undecided_and_says_how_many_images_decide_it():
    table = _verdicts(_tables([60.0, 62.0, 10.0], [98.0, 80.0, 79.0], pgd=35.0, fgsm=30.0, union=5.0), n=100)
    assert table.loc["eps_monotone", "verdict"] == C.UNDECIDED
    assert table.loc["steps_help_attacker", "verdict"] == C.UNDECIDED
    assert "images would decide it" in table.loc["eps_monotone", "reason"]
    assert table.loc["union_below_each", "verdict"] == C.HOLDS


def test_pgd_fgsm_claim_is_not_measured_without_a_common_eps():
    tables = _tables([90.0, 60.0], [98.0, 80.0], pgd=10.0, fgsm=30.0, union=5.0)
    tables["attack_suite"]["attack"] = ["clean", "fgsm@0.3", "pgd_linf@0.2", "pgd_l2@2"]
    row = _verdicts(tables).loc["pgd_beats_fgsm"]
    assert row["verdict"] == C.NOT_MEASURED and "common eps" in row["reason"]
