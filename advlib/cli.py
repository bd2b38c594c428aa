"""Command line: `advlib run|sweep|list|cache|study|bench` — papermill runs and sweeps of the notebooks, cache upkeep."""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from . import params as params_mod
from . import preflight
from .cache import Cache
from .runtime import project_root, publishing_outputs, run_dir

log = logging.getLogger("advlib")


class UsageError(Exception):
    """A bad command-line value; `main` prints it on one line and exits with 2, like argparse."""


def notebook_path(stem: str) -> Path:
    """notebooks/NN_<stem>.ipynb for a stem."""
    matches = sorted((project_root() / "notebooks").glob(f"[0-9][0-9]_{stem}.ipynb"))
    if not matches:
        raise UsageError(f"no notebook for {stem!r}; allowed: {', '.join(available_stems())}")
    return matches[0]


def available_stems() -> list[str]:
    found = {p.stem[3:] for p in (project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    return sorted(found & set(params_mod.list_stems()))


class RunFailed(Exception):
    """A notebook that raised or was interrupted: `main` prints its last error line and where the failed notebook
    is, and exits with `code` (1, or 130 after Ctrl-C as shells do)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def run_notebook(
    stem: str, profile: str, overrides: Sequence[str], output: Path | None = None, *, publish: bool = False
) -> Path:
    """Validate the parameters and this machine (fails before any work), then execute the notebook with papermill.

    The executed notebook goes to runs/<stem>/<profile>-<digest>/ (or `output`); so do the tables and figures, except
    in a published run (`make reproduce`, built-in profile, no overrides), whose outputs go to figures/<stem>/<profile>/.
    The notebook is written under a temporary name and renamed only on success: a failed or interrupted run leaves
    <name>.failed.ipynb beside the last good one instead of replacing it."""
    import papermill

    with publishing_outputs(publish):
        p = params_mod.load(stem, profile, list(overrides))  # refuses overrides and custom profiles when publishing
        found = preflight.problems(stem, p)
        if found:
            raise UsageError(f"{stem} cannot run here: " + "; ".join(found))
        source = notebook_path(stem)
        target = output or run_dir(stem, profile, p) / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.stem + ".running.ipynb")
        parsed = dict(params_mod.parse_override(item) for item in overrides)
        log.info("run: %s (profile %s) -> %s", source.name, profile, _shown(target))
        try:
            papermill.execute_notebook(
                str(source),
                str(partial),
                parameters={"profile": profile, "overrides": parsed},
                cwd=str(source.parent),
                progress_bar=True,
            )
        except (papermill.PapermillExecutionError, KeyboardInterrupt) as error:
            failed = failed_notebook(target)
            if partial.exists():
                os.replace(partial, failed)
            what = (
                f"{error.ename}: {error.evalue}".splitlines()[0]
                if isinstance(error, papermill.PapermillExecutionError)
                else "interrupted"
            )
            raise RunFailed(
                f"{stem} failed: {what}\n  executed notebook: {_shown(failed)}"
                + (f" (last good run kept: {_shown(target)})" if target.exists() else ""),
                130 if isinstance(error, KeyboardInterrupt) else 1,
            ) from None
    os.replace(partial, target)
    return target


def failed_notebook(target: Path) -> Path:
    """Where a failed or interrupted run leaves its partly executed notebook, beside `target`."""
    return target.with_name(target.stem + ".failed.ipynb")


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1, or an error naming the bad value."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _shown(path: Path) -> str:
    """`path` relative to the project when inside it (messages name no machine paths they need not)."""
    return str(path.relative_to(project_root())) if path.is_relative_to(project_root()) else str(path)


def _cmd_run(args: argparse.Namespace) -> int:
    stems = available_stems() if args.stem == "all" else [args.stem]
    if args.jobs > 1 and len(stems) > 1:
        return _run_side_by_side(stems, args)
    for stem in stems:
        run_notebook(
            stem,
            args.profile,
            args.set or [],
            Path(args.output) if args.output and len(stems) == 1 else None,
            publish=args.publish,
        )
    return 0


def _run_side_by_side(stems: Sequence[str], args: argparse.Namespace) -> int:
    """`run all --jobs N`: every notebook's parameters and machine checked first, then N runs at a time."""
    from .jobs import run_side_by_side

    with publishing_outputs(args.publish):
        for stem in stems:
            found = preflight.problems(stem, params_mod.load(stem, args.profile, list(args.set or [])))
            if found:
                raise UsageError(f"{stem} cannot run here: " + "; ".join(found))
    results = run_side_by_side(stems, args.profile, args.set or [], publish=args.publish, jobs=args.jobs)
    failed = [r for r in results if r.status != 0]
    for r in results:
        sys.stdout.write(f"{r.stem}: {'ok' if r.status == 0 else f'FAILED (exit {r.status})'}, log {_shown(r.log)}\n")
    return 1 if failed else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep as sweep_mod

    if args.stem not in available_stems():
        raise UsageError(f"no notebook for {args.stem!r}; allowed: {', '.join(available_stems())}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    try:
        planned = sweep_mod.plan(args.stem, args.profile, sweep_mod.parse_grid(args.grid or []), seeds)
    except ValueError as error:
        raise UsageError(f"sweep: {error}") from None
    plot = _checked_plot(args.plot, args.stem, planned.keys) if args.plot else None
    results = sweep_mod.run_sweep(
        planned, executor=args.executor, workers=args.workers, scheduler=args.scheduler, resume=args.resume
    )
    tidy = sweep_mod.gather(planned, results)
    paths = sweep_mod.write_gathered(planned, tidy, results)
    out = sys.stdout
    failed = [r for r in results if r.status == "failed"]
    out.write(
        f"sweep {planned.sweep_id}: {len(results) - len(failed)} of {len(planned.points)} points ok; "
        f"tables in {paths['results.csv']}\n"
    )
    for result in failed:
        out.write(
            f"FAILED {result.name}: {failed_notebook(Path(planned.point(result.name).notebook))}\n  "
            + result.error.replace("\n", "\n  ")
            + "\n"
        )
    if failed:
        out.write("rerun only the failed points: add --resume\n")
    if plot and not tidy.empty:
        out.write(f"plot: {sweep_mod.plot_metric(planned, tidy, *plot)}\n")
    return 1 if failed else 0


def _cmd_ladder(args: argparse.Namespace) -> int:
    from . import ladder

    try:
        fractions = [float(f) for f in args.fractions.split(",")]
        ladder.plan(args.stem, args.profile, fractions)  # checks the stem, fractions and every rung's parameters
    except (ValueError, TypeError, LookupError) as error:
        raise UsageError(f"ladder: {error}") from None
    paths = ladder.run_ladder(args.stem, args.profile, fractions, publish=args.publish, jobs=args.jobs)
    sys.stdout.write(f"ladder {args.stem}: {_shown(paths['table'])}, {_shown(paths['figure'])}\n")
    return 0


def _checked_plot(plot: str, stem: str, swept: Sequence[str]) -> tuple[str, str]:
    """--plot 'table.column:key' checked before the sweep runs: the key is swept, and the table and column are among
    those the notebook writes (the committed ci outputs in figures/<stem>/ci/ list them)."""
    metric, sep, key = plot.rpartition(":")
    table, dot, column = metric.partition(".")
    if not sep or not key or not dot or not table or not column:
        raise UsageError(f"--plot {plot!r} is not of the form table.column:key")
    if key not in swept:
        raise UsageError(f"--plot key {key!r} is not swept; swept keys: {', '.join(swept)}")
    folder = project_root() / "figures" / stem / "ci"
    tables = {path.stem: path for path in folder.glob("*.csv")}
    if tables and table not in tables:
        raise UsageError(f"--plot table {table!r} is not a table of {stem}; tables: {', '.join(sorted(tables))}")
    if tables:
        columns = tables[table].open().readline().strip().split(",")
        if column not in columns:
            raise UsageError(
                f"--plot column {column!r} is not in {stem}'s {table}; columns: {', '.join(c for c in columns if c)}"
            )
    return metric, key


def _cmd_list(args: argparse.Namespace) -> int:
    from .attacks import attack_info, list_attacks
    from .data import list_datasets
    from .models import list_models

    out = sys.stdout
    out.write("notebooks: " + ", ".join(available_stems()) + "\n")
    out.write("models:    " + ", ".join(list_models()) + "\n")
    out.write("datasets:  " + ", ".join(list_datasets()) + "\n")
    out.write("attacks:\n")
    for name in list_attacks():
        info = attack_info(name)
        out.write(
            f"  {name:<24} {info.norm:<5} {info.kind:<8} {'targeted' if info.targeted else '':<9} {info.backend:<13} {info.summary}\n"
        )
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    cache = Cache(args.root) if args.root else Cache()
    out = sys.stdout
    if args.action == "ls":
        rows = cache.ls()
        for row in rows:
            out.write(f"{row['kind']:<14} {row['key']}  {row['bytes']:>12,d} B  {row['created']}\n")
        out.write(f"{len(rows)} entries in {cache.root}\n")
        return 0
    if args.action == "verify":
        bad = cache.verify()
        for entry, problem in bad:
            out.write(f"CORRUPT {entry}: {problem}\n")
        out.write(f"{len(bad)} corrupt of {len(list(cache.entries()))} entries\n")
        return 1 if bad else 0
    kinds = sorted({entry.parent.name for entry in cache.entries()})
    if args.kind is not None and args.kind not in kinds:
        raise UsageError(
            f"--kind {args.kind!r} has no entries in {cache.root.name}/; kinds present: {', '.join(kinds) or 'none'}"
        )
    removed = cache.prune(args.kind, corrupt_only=args.corrupt)
    out.write(f"removed {len(removed)} paths\n")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    """`study import PATH`: check a results CSV (MTurk's, or the annotation page's) and store a copy under the data
    folder, where parameters may point (study.results cannot name a path outside the project, data or cache)."""
    import hashlib
    import shutil

    from .files import atomic_write
    from .human import import_results
    from .runtime import data_root

    source = Path(args.path).expanduser()
    if not source.is_file():
        raise UsageError(
            f"study import: {str(source)!r} is not a file; pass the answers CSV saved from annotate.html "
            f"or downloaded from MTurk"
        )
    try:
        answers = import_results(source)
    except (ValueError, KeyError, UnicodeDecodeError) as error:
        raise UsageError(f"study import: {error}") from None
    if answers.empty:
        raise UsageError(f"study import: {source.name} holds no answers")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
    target = data_root() / "human_study" / f"{source.stem}-{digest}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    shown = _shown(target)
    sys.stdout.write(
        f"stored {len(answers)} answers of {answers['worker'].nunique()} annotator(s) in {shown}\n"
        f"Table 2 from them: advlib run adversary_critic --profile {args.profile} --set study.results={shown}\n"
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    script = project_root() / "benchmarks" / "run.py"
    if not script.is_file():
        raise SystemExit(f"benchmark script {script} not found")
    sys.argv = [
        str(script),
        *(["--quick"] if args.quick else []),
        *(["--suite", args.suite] if args.suite else []),
        *(["--bf16"] if args.bf16 else []),
        *(["--channels-last"] if args.channels_last else []),
        *(f"--only={part}" for part in args.only or []),
        *(["--output", args.output] if args.output else []),
        *(["--notebooks", args.notebooks] if args.notebooks else []),
    ]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a notebook (or all) with papermill")
    run.add_argument("stem", help="notebook stem (e.g. quickstart) or 'all'")
    run.add_argument("--profile", default="default", help="ci, default, paper, or a path to a YAML profile")
    run.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a parameter (dotted keys; repeatable)"
    )
    run.add_argument("--output", help="where to write the executed notebook (default runs/<stem>/<profile>-<digest>/)")
    run.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="with 'all': notebooks run at once, each in its own process with the cores shared evenly (default 1)",
    )
    run.add_argument(
        "--publish",
        action="store_true",
        help="write tables and figures into the committed figures/<stem>/<profile>/ (make reproduce; "
        "built-in profiles without --set only)",
    )
    run.set_defaults(func=_cmd_run)
    sweep = sub.add_parser("sweep", help="run a notebook over a grid of parameters (locally or on Dask)")
    sweep.add_argument("stem", help="notebook stem (e.g. quickstart)")
    sweep.add_argument("--profile", default="ci", help="ci, default, paper, or a path to a YAML profile")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a swept key and its values (repeatable)")
    sweep.add_argument("--seeds", metavar="S1,S2", help="seeds to repeat every grid point with")
    sweep.add_argument("--executor", default="local", choices=["local", "dask"], help="local process pool or Dask")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="Dask scheduler (default: a LocalCluster)")
    sweep.add_argument("--workers", type=int, help="parallel points (default: the number of cores)")
    sweep.add_argument("--resume", action="store_true", help="rerun only the points that failed or are missing")
    sweep.add_argument("--plot", metavar="TABLE.COLUMN:KEY", help="plot a gathered metric against a swept key")
    sweep.set_defaults(func=_cmd_sweep)
    ladder = sub.add_parser("ladder", help="rerun a profile at fractions of its budget; each claim's margin vs budget")
    ladder.add_argument("stem", help="notebook stem (e.g. regroup)")
    ladder.add_argument("--profile", default="default", help="ci, default, paper, or a path to a YAML profile")
    ladder.add_argument("--fractions", default="0.25,0.5,1", help="budget fractions in (0, 1] (default 0.25,0.5,1)")
    ladder.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="rungs run at once, each in its own process with the cores shared evenly (default 1: all cores each)",
    )
    ladder.add_argument("--publish", action="store_true", help="write into the committed figures/<stem>/ladder/")
    ladder.set_defaults(func=_cmd_ladder)
    sub.add_parser("list", help="notebooks, models, datasets and attacks").set_defaults(func=_cmd_list)
    cache = sub.add_parser("cache", help="inspect or clean the artifact cache")
    cache.add_argument("action", choices=["ls", "verify", "prune"])
    cache.add_argument("--root", help="cache root (default $ADVLIB_CACHE or artifacts/)")
    cache.add_argument("--kind", help="prune only this kind of entry")
    cache.add_argument("--corrupt", action="store_true", help="prune only entries that fail verification")
    cache.set_defaults(func=_cmd_cache)
    study = sub.add_parser("study", help="the human study of adversary_critic (Table 2)")
    study_sub = study.add_subparsers(dest="action", required=True)
    study_import = study_sub.add_parser("import", help="store an answers CSV (from annotate.html or MTurk) for Table 2")
    study_import.add_argument("path", help="the answers CSV, anywhere on this machine")
    study_import.add_argument("--profile", default="default", help="the profile named in the printed run command")
    study.set_defaults(func=_cmd_study)
    bench = sub.add_parser("bench", help="run the benchmarks and write benchmarks/RESULTS.md")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    bench.add_argument("--suite", metavar="PROFILE", help="profile of the notebook-suite rows ('none' skips them)")
    bench.add_argument("--bf16", action="store_true", help="attack engine under bf16 autocast (CUDA)")
    bench.add_argument("--channels-last", action="store_true", help="channels_last memory format for the attack engine")
    bench.add_argument(
        "--only",
        action="append",
        metavar="PART",
        help="run only this part (repeatable): engine, steps, regroup, mat, union, family, suite",
    )
    bench.add_argument("--output", help="where to write the table (default benchmarks/RESULTS.md)")
    bench.add_argument("--notebooks", metavar="STEM,...", help="the notebook suite with only these notebooks")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (params_mod.ParamsError, UsageError) as error:
        sys.stderr.write(f"advlib: {error}\n")
        return 2
    except RunFailed as error:
        sys.stderr.write(f"advlib: {error}\n")
        return error.code


if __name__ == "__main__":
    raise SystemExit(main())
