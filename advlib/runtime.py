"""Device choice, seeding, threads, project paths and the run manifest written beside outputs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_write_text
from .profiling import start_timer

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MANIFEST_PACKAGES = ("advlib", "torch", "torchvision", "foolbox", "numpy", "pandas")


def project_root() -> Path:
    """The advlib checkout: $ADVLIB_HOME, else the nearest parent of the cwd holding params/ and pyproject.toml."""
    env = os.environ.get("ADVLIB_HOME")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    package_parent = Path(__file__).resolve().parent.parent
    if (package_parent / "params").is_dir():
        return package_parent
    return here


def cache_root() -> Path:
    """Root of the artifact cache: $ADVLIB_CACHE, else <project>/artifacts, or <project>/artifacts-portable under
    portable kernels (`make golden`, `make nbval`): their results differ from a plain run's in the last bits, so nbval
    must not load what a plain `advlib run` cached, nor a plain run what a golden run cached."""
    env = os.environ.get("ADVLIB_CACHE")
    if env:
        return Path(env).resolve()
    return project_root() / ("artifacts-portable" if portable_kernels_requested() else "artifacts")


def data_root() -> Path:
    """Root for downloaded or local datasets: $ADVLIB_DATA, else <project>/data."""
    env = os.environ.get("ADVLIB_DATA")
    return Path(env).resolve() if env else project_root() / "data"


def contained_path(text: str, what: str) -> Path:
    """`text` (relative paths from the project root) resolved, if it lies inside the project, data or cache
    directory; otherwise a ValueError naming the path and those directories (parameters cannot reach elsewhere)."""
    path = Path(text).expanduser()
    resolved = (path if path.is_absolute() else project_root() / path).resolve()
    roots = [project_root(), data_root(), cache_root()]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ValueError(
            f"{what} {text!r} resolves to {str(resolved)!r}, outside the allowed directories: "
            f"{', '.join(str(r) for r in roots)}"
        )
    return resolved


PUBLISH_ENV = "ADVLIB_PUBLISH"
_run_dirs: dict[tuple[Path, str, str], Path] = {}  # (project, stem, profile) -> the folder of that notebook's Run


def profile_name(profile: str) -> str:
    """The profile's name: itself for a built-in profile, the file stem for a YAML path."""
    return Path(profile).stem if profile.endswith((".yaml", ".yml")) else profile


def params_digest(params: Any) -> str:
    """8 hex digits naming a run's resolved parameters (a profile plus its overrides)."""
    dumped = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:8]


def publishing() -> bool:
    """True in `make golden` and `make reproduce` (`advlib run --publish`): the only runs that write figures/."""
    return os.environ.get(PUBLISH_ENV) == "1"


@contextmanager
def publishing_outputs(publish: bool) -> Iterator[None]:
    """$ADVLIB_PUBLISH set for the block exactly when `publish` (a kernel started inside inherits it: `output_dir` then
    writes figures/, and params.load refuses overrides and custom profiles), and unset afterwards."""
    os.environ.pop(PUBLISH_ENV, None)
    if publish:
        os.environ[PUBLISH_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(PUBLISH_ENV, None)


def run_dir(stem: str, profile: str, params: Any) -> Path:
    """runs/<stem>/<profile>-<digest>/: where an unpublished run's executed notebook and outputs go."""
    return project_root() / "runs" / stem / f"{profile_name(profile)}-{params_digest(params)}"


def output_dir(stem: str, profile: str) -> Path:
    """Where a run's tables, figures and manifest go, created on demand: $ADVLIB_FIGURES/<stem>/<profile>/ for a sweep
    point; figures/<stem>/<profile>/ for a published run; otherwise the folder of the notebook's `Run`
    (runs/<stem>/<profile>-<digest>/), or runs/<stem>/<profile>/ when no Run was made. So overrides, custom
    profiles, nbval and plain CLI runs never overwrite the committed figures."""
    env = os.environ.get("ADVLIB_FIGURES")
    if env:
        path = Path(env).resolve() / stem / profile_name(profile)
    elif publishing():
        path = project_root() / "figures" / stem / profile_name(profile)
    else:
        path = _run_dirs.get((project_root(), stem, profile), project_root() / "runs" / stem / profile_name(profile))
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda', 'cuda:1', 'mps' and 'cpu' are taken as asked."""
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise ValueError(f"device {name!r} is not allowed; choose one of {', '.join(DEVICE_CHOICES)} (or 'cuda:N')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with `deterministic`, ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


PORTABLE_KERNELS_ENV = "ADVLIB_PORTABLE_KERNELS"


def portable_kernels_requested() -> bool:
    """Whether $ADVLIB_PORTABLE_KERNELS asks for the portable kernels (any value but empty or 0)."""
    return os.environ.get(PORTABLE_KERNELS_ENV, "") not in ("", "0")


def use_portable_kernels() -> bool:
    """With $ADVLIB_PORTABLE_KERNELS=1 (set by `make golden` and `make nbval`), turn oneDNN and NNPACK off: both pick
    kernels and blocking by the CPU's ISA and cache sizes. Convolutions then run as im2col + MKL GEMM, and the Makefile
    pins MKL (CBWR=COMPATIBLE) and ATen (AVX2) to code paths every x86-64 CPU takes alike. Returns whether it is on."""
    on = portable_kernels_requested()
    if on:
        # torch types the module attribute as its ContextProp descriptor; at runtime it is a bool property
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
        torch.backends.nnpack.set_flags(False)
    return on


def set_dtype(name: str) -> torch.dtype:
    """Make `name` ('float32' or 'float64') torch's default dtype, in which advlib builds models and loads images.

    The `ci` profiles run in float64: a different CPU, kernel or thread count changes sums in their last bits, and
    training amplifies that; from float64's 1e-16 it stays far below the printed digits, from float32's 1e-7 it
    does not (a checked output once moved from 33.5 to 33.0 on another CPU)."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not allowed; choose one of {', '.join(DTYPES)}")
    torch.set_default_dtype(DTYPES[name])
    return DTYPES[name]


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (None keeps torch's choice); returns the count in force."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def kernels_in_force() -> dict[str, str | int]:
    """The CPU kernel choices a run's floating-point results can depend on: ATen's vector capability, MKL's
    reproducibility mode, oneDNN, and the intra-op thread count (recorded in the manifest; `make portability` varies
    them)."""
    return {
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "unset"),
        "onednn": "on" if torch.backends.mkldnn.enabled else "off",
        "threads": torch.get_num_threads(),
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name with its family and model numbers (from /proc/cpuinfo where there is one): float32
    results depend on the CPU's kernels, so manifests and reports name it."""
    try:
        info = cpuinfo.read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(re.findall(r"^(model name|cpu family|model)\s*:\s*(.+)$", info, re.M))
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def git_commit() -> str:
    """The commit of the checkout, with '+dirty' when the tree has changes; 'unknown' outside git."""
    try:
        root = project_root()
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _MANIFEST_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class Run:
    """One notebook or CLI run: seeds, device, dtype and threads set up front, a manifest written at the end."""

    def __init__(
        self,
        stem: str,
        profile: str,
        params: Any,
        *,
        seed: int = 0,
        device: str = "auto",
        threads: int | None = None,
        dtype: str = "float32",
    ):
        self.stem, self.profile, self.params, self.seed = stem, profile, params, seed
        self.device = resolve_device(device)
        self.threads = set_threads(threads)
        self.dtype = set_dtype(dtype)
        self.portable_kernels = use_portable_kernels()
        seed_everything(seed)
        self.started = time.time()
        self.timer = start_timer()
        _run_dirs[(project_root(), stem, profile)] = run_dir(stem, profile, params)
        self.out = output_dir(stem, profile)

    def artifact(self, study: Any, name: str) -> Any:
        """`study`'s declared artifact `name` (an `experiments.base.Study`): computed, saved beside this run's outputs,
        paired with the paper's numbers where it has a reference, and returned as a table."""
        return study.publish(name, self)

    def manifest(self) -> dict[str, Any]:
        params = self.params.model_dump(mode="json") if hasattr(self.params, "model_dump") else self.params
        return {
            "stem": self.stem,
            "profile": self.profile,
            "seed": self.seed,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_model(),
            "threads": self.threads,
            "dtype": str(self.dtype).removeprefix("torch."),
            "portable_kernels": self.portable_kernels,
            "kernels": kernels_in_force(),
            "git_commit": git_commit(),
            "versions": package_versions(),
            "params": params,
            "wall_time_s": round(time.time() - self.started, 2),
            "time_by_stage": self.timer.summary(),
        }

    def write_manifest(self) -> Path:
        """Write manifest.json beside the run's figures and tables; returns its path."""
        return atomic_write_text(
            self.out / "manifest.json", json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n"
        )
