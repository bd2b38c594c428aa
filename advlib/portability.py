"""`make portability`: `make nbval` (every ci notebook once from an empty cache, checked cells against the committed
goldens, tables against figures/<stem>/ci/) under CPU kernels other than the ones the goldens were made with, and the
README's "Reproducibility" block written from what ran. The goldens must pass it before they are committed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .runtime import cpu_model, project_root

README_BEGIN = "<!-- portability:begin (written by `make portability`) -->"
README_END = "<!-- portability:end -->"
CHECK_MARK = "NBVAL_CHECK_OUTPUT"


@dataclass(frozen=True)
class Perturbation:
    """One kernel set: a name and the environment that selects it."""

    name: str
    env: dict[str, str]


# Together these take every value the issue asks for: ATen's default (scalar), AVX2 and AVX-512 kernels; MKL's
# conditional numerical reproducibility in COMPATIBLE and AVX2 mode (and unset: MKL's own choice); oneDNN on and off
# (ADVLIB_PORTABLE_KERNELS=1 turns it and NNPACK off); 1 and 2 threads. The goldens come from `make golden`: this
# machine's own kernels, MKL unset, oneDNN on, 2 threads. One-thread runs execute two notebooks at a time.
PERTURBATIONS = (
    Perturbation("plain `make nbval` (this machine's own kernels, MKL unset, oneDNN on), 1 thread", {}),
    Perturbation(
        "scalar ATen, MKL COMPATIBLE, oneDNN off, 1 thread",
        {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ADVLIB_PORTABLE_KERNELS": "1"},
    ),
    Perturbation(
        "AVX2 ATen, MKL AVX2, oneDNN on, 2 threads",
        {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "2", "NBVAL_WORKERS": "1"},
    ),
    Perturbation(
        "AVX-512 ATen, MKL AVX2, oneDNN off, 1 thread",
        {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2", "ADVLIB_PORTABLE_KERNELS": "1"},
    ),
)
_KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "ADVLIB_PORTABLE_KERNELS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NBVAL_WORKERS",
)


@dataclass
class Outcome:
    """What one perturbed `make nbval` gave: its exit status, pytest's closing counts, the kernels in force."""

    perturbation: Perturbation
    status: int
    counts: str
    kernels: dict[str, str]
    seconds: float


def goldens_digest(root: Path) -> str:
    """12 hex digits over what the portability check compares: every checked cell (source and outputs) of the
    committed notebooks and every committed ci table. A golden re-made after the check no longer matches."""
    h = hashlib.sha256()
    for notebook in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and CHECK_MARK in source:
                h.update(json.dumps([source, cell["outputs"]], sort_keys=True).encode())
    for table in sorted((root / "figures").glob("*/ci/*.csv")):
        h.update(f"{table.relative_to(root)}\n".encode() + table.read_bytes())
    return h.hexdigest()[:12]


def _kernels_in_force(tables: Path) -> dict[str, str]:
    """The kernel settings the notebooks recorded in their manifests (one value each, or 'mixed')."""
    seen: dict[str, set[str]] = {}
    for manifest in tables.glob("*/ci/manifest.json"):
        for key, value in json.loads(manifest.read_text()).get("kernels", {}).items():
            seen.setdefault(key, set()).add(str(value))
    return {key: values.pop() if len(values) == 1 else "mixed" for key, values in sorted(seen.items())}


def run_one(perturbation: Perturbation, root: Path) -> Outcome:
    """`make nbval` with the perturbation's environment (and no inherited kernel settings), from an empty cache."""
    env = {k: v for k, v in os.environ.items() if k not in _KERNEL_ENV}
    with tempfile.TemporaryDirectory(prefix="advlib-portability-") as scratch:
        env.update(perturbation.env, NBVAL_SCRATCH=scratch)
        started = time.time()
        done = subprocess.run(
            ["make", "--no-print-directory", "nbval"], cwd=root, env=env, capture_output=True, text=True
        )
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
        closing = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
        # two pytest runs: the notebooks' cells, then the table comparison
        counts = "; ".join(re.sub(r"\s+in [\d.]+s.*$", "", line.strip("= ")) for line in closing) or "no summary"
        return Outcome(
            perturbation, done.returncode, counts, _kernels_in_force(Path(scratch) / "tables"), time.time() - started
        )


def report(outcomes: list[Outcome], digest: str) -> str:
    """The README block: the CPU, each perturbation with the kernels in force, and the verdict."""
    passed = all(o.status == 0 for o in outcomes)
    lines = [
        README_BEGIN,
        "",
        f"From `make portability` on {time.strftime('%Y-%m-%d')}, CPU {cpu_model()}, goldens `{digest}`: "
        + ("every run passed." if passed else "FAILED (see the rows)."),
        "",
        "| kernels asked for | ATen capability in force | MKL_CBWR | oneDNN | threads | `make nbval` | minutes |",
        "|---|---|---|---|---|---|---:|",
    ]
    for o in outcomes:
        k = o.kernels
        lines.append(
            f"| {o.perturbation.name} | {k.get('aten_capability', '?')} | {k.get('mkl_cbwr', '?')} | "
            f"{k.get('onednn', '?')} | {k.get('threads', '?')} | {'passed' if o.status == 0 else 'FAILED'}: "
            f"{o.counts} | {o.seconds / 60:.1f} |"
        )
    return "\n".join([*lines, "", README_END])


def write_readme(block: str, root: Path) -> None:
    readme = root / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"README.md has no portability block ({README_BEGIN} ... {README_END})")
    readme.write_text(pattern.sub(lambda _: block, text))


def main(argv: list[str]) -> int:
    names = [p.name for p in PERTURBATIONS]
    if any(not a.isdigit() or int(a) >= len(PERTURBATIONS) for a in argv):
        raise SystemExit(f"perturbations are numbered 0..{len(names) - 1}: {names}; got {argv}")
    chosen = [PERTURBATIONS[int(i)] for i in argv] if argv else list(PERTURBATIONS)
    root = project_root()
    digest = goldens_digest(root)
    outcomes = []
    for perturbation in chosen:
        sys.stderr.write(f"portability: {perturbation.name}\n")
        outcomes.append(run_one(perturbation, root))
    block = report(outcomes, digest)
    if not argv:
        write_readme(block, root)
    sys.stdout.write(block + "\n")
    return 0 if all(o.status == 0 for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
