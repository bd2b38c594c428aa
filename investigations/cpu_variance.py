"""Same code, same parameters, same seed, another CPU: how far do the `default` tables and verdicts move?

The `default` profiles train in float32 with the CPU's own kernels, so two machines give different weights, and a
chaotic training (mixtures of generators, adversarial training) turns those last bits into a different model. This
compares tables and claims that were computed with identical settings on the AMD EPYC Zen 5 (committed at
`--before`) and on the Intel Xeon of 2026-12-07 (the files given), and writes investigations/cpu_variance.md.
Usage: python investigations/cpu_variance.py [--before REV]
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SIN_INTEL = "investigations/cpu_variance/strength_in_numbers_default_intel_xeon"

# (what, path at --before, path of the Intel run, index columns, rows to keep: None = all)
TABLES = [
    (
        "MixGen Table 6, joint systems (their settings did not change with faster_repeats)",
        "figures/mixture_of_generators/default/table6.csv",
        "figures/mixture_of_generators/default/table6.csv",
        ["kind", "experiment"],
        lambda t: t[(t["kind"] == "joint") & t["experiment"].astype(str).str.isdigit()],
    ),
    (
        "Strength in Numbers Table 1c (accuracy %, long attacks)",
        "figures/strength_in_numbers/default/table1c.csv",
        f"{SIN_INTEL}/table1c.csv",
        ["Unnamed: 0"],
        None,
    ),
    (
        "Adversary Critic Table 1b (LeNet-5; mean of 2 runs)",
        "figures/adversary_critic/default/table1b.csv",
        "figures/adversary_critic/default/table1b.csv",
        ["defense"],
        None,
    ),
]
CLAIMS = [("Strength in Numbers", "figures/strength_in_numbers/default/claims.csv", f"{SIN_INTEL}/claims.csv")]


def at_revision(rev: str, path: str) -> pd.DataFrame:
    """A CSV as committed at `rev`."""
    text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
    return pd.read_csv(io.StringIO(text.stdout))


def compare(before: pd.DataFrame, after: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Numeric columns side by side: before, after and after - before, rows aligned on `index`."""
    b, a = before.set_index(index), after.set_index(index)
    numeric = [c for c in b.columns if pd.api.types.is_numeric_dtype(b[c]) and c in a.columns]
    parts = {"Zen 5": b[numeric], "Xeon": a[numeric], "change": a[numeric] - b[numeric]}
    return pd.concat(parts, axis=1).swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="956e72f", help="commit whose default outputs came from the Zen 5")
    args = parser.parse_args()
    lines = [
        "# Same settings, another CPU",
        "",
        f"Written by `python investigations/cpu_variance.py --before {args.before}`. Left: the outputs committed at "
        f"{args.before} (AMD EPYC Zen 5, torch 2.14.1, one thread). Right: the same notebooks rerun cold on an Intel "
        "Xeon (2026-12-07, same torch, one thread). Nothing but the machine differs in the rows below.",
    ]
    for what, old, new, index, keep in TABLES:
        before, after = at_revision(args.before, old), pd.read_csv(ROOT / new)
        if keep is not None:
            before, after = keep(before), keep(after)
        table = compare(before, after, index)
        largest = table.xs("change", axis=1, level=1).abs().max().max()
        lines += ["", f"## {what}", "", f"Largest change: {largest:.2f}.", "", table.round(3).to_markdown()]
    for what, old, new in CLAIMS:
        before, after = at_revision(args.before, old).set_index("id"), pd.read_csv(ROOT / new).set_index("id")
        verdicts = pd.DataFrame(
            {
                "Zen 5 verdict": before["verdict"],
                "Zen 5 margin": before["margin"],
                "Xeon verdict": after["verdict"],
                "Xeon margin": after["margin"],
            }
        )
        changed = int((verdicts["Zen 5 verdict"] != verdicts["Xeon verdict"]).sum())
        lines += [
            "",
            f"## {what}: claims",
            "",
            f"{changed} of {len(verdicts)} verdicts differ.",
            "",
            verdicts.round(2).to_markdown(),
        ]
    out = ROOT / "investigations" / "cpu_variance.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
