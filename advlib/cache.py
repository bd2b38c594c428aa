"""Content-addressed artifact cache: tensors as safetensors, metadata as JSON, atomic and checksummed.

An entry lives in <root>/<kind>/<key>/ with `tensors.safetensors` and `meta.json`; the key is the
hash of the canonical parameters that determine the artifact. Entries appear by one atomic rename
of a fully written temp dir, builds of the same key are serialised by a file lock, and a load whose
checksum does not match is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from safetensors.torch import load_file, save_file

from .profiling import timed
from .runtime import cache_root

log = logging.getLogger("advlib")

CACHE_FORMAT = 2  # 2: keys derived from parameter blocks (`derive_key`), no hand-kept legacy fields
TENSORS = "tensors.safetensors"
META = "meta.json"
_KIND_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


class CacheError(RuntimeError):
    """A cache entry that cannot be written or read."""


@dataclass
class Artifact:
    """What a build returns and a load gives back: named tensors plus JSON-able metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    from_cache: bool = False


def canonical(params: Any) -> str:
    """Canonical JSON of the parameters (sorted keys, pydantic models dumped) used for the key."""
    if hasattr(params, "model_dump"):
        params = params.model_dump(mode="json")
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


def make_key(kind: str, params: Any) -> str:
    """sha256 over kind, cache format, the canonical parameters and torch's default dtype (a float64 run's models and
    adversarials are other artifacts; float32 is left out of the digest, so float32 keys stay as they were); first 20
    hex digits."""
    dtype = torch.get_default_dtype()
    precision = "" if dtype == torch.float32 else f"|{dtype}"
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{kind}|{canonical(params)}{precision}".encode()).hexdigest()
    return digest[:20]


@dataclass
class Trained(Generic[ModelT]):
    """What every trainer returns: the trained module, its per-epoch history, and the cache key that names it (the
    upstream key of whatever is derived from it); `meta` holds any other numbers the training recorded."""

    model: ModelT
    history: list[dict[str, Any]]
    key: str
    meta: dict[str, Any] = field(default_factory=dict)


def identity(value: Any) -> Any:
    """What of `value` names an artifact, as JSON: a parameter block's fields except those declared
    `json_schema_extra={"identity": False}` (e.g. whether to download a dataset), a `Trained`'s or `CacheKey`'s key
    for an upstream artifact, and mappings, sequences and plain values as themselves."""
    if isinstance(value, BaseModel):
        return {
            name: identity(getattr(value, name))
            for name, info in type(value).model_fields.items()
            if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("identity") is False)
        }
    if isinstance(value, Trained | CacheKey):
        return value.key
    if isinstance(value, Mapping):
        return {str(k): identity(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [identity(v) for v in value]
    return to_jsonable_python(value)


@dataclass(frozen=True)
class CacheKey:
    """An artifact's kind and the parameters that name it; `key` is their digest."""

    kind: str
    params: dict[str, Any]

    @property
    def key(self) -> str:
        return make_key(self.kind, self.params)


def derive_key(kind: str, **parts: Any) -> CacheKey:
    """The key of a `kind` artifact derived from what determines it: parameter blocks, upstream artifacts (`Trained`
    or `CacheKey`: their keys), seeds and other plain values, each under its own name. No key is assembled by hand, so
    a parameter added to a block is part of every key that block enters."""
    _check_kind(kind)
    return CacheKey(kind, {name: identity(value) for name, value in sorted(parts.items())})


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_kind(kind: str) -> None:
    if not kind or set(kind) - _KIND_CHARS:
        raise ValueError(f"cache kind {kind!r} must be lowercase letters, digits, '_' or '-'")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Cache:
    """A cache rooted at a directory (default: $ADVLIB_CACHE or <project>/artifacts)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_root()

    # -- paths -------------------------------------------------------------------------------
    def entry_dir(self, kind: str, key: str) -> Path:
        _check_kind(kind)
        return self.root / kind / key

    def checkpoint_dir(self, kind: str, key: str) -> Path:
        """Where a build of (kind, key) keeps its resumable per-epoch checkpoints."""
        _check_kind(kind)
        return self.root / "checkpoints" / kind / key

    # -- read / write ------------------------------------------------------------------------
    def write(self, kind: str, key: str, artifact: Artifact, params: Any = None) -> Path:
        """Write an entry atomically: temp dir in the same folder, fsync, then one rename."""
        final = self.entry_dir(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            tensors = {name: t.detach().cpu().contiguous() for name, t in artifact.tensors.items()}
            save_file(tensors, str(tmp / TENSORS))
            meta = {
                "kind": kind,
                "key": key,
                "format": CACHE_FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "params": json.loads(canonical(params)) if params is not None else None,
                "sha256": {TENSORS: file_sha256(tmp / TENSORS)},
                "meta": artifact.meta,
            }
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except OSError as error:
            raise CacheError(f"could not write cache entry {kind}/{key} under {self.root}: {error}") from error
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def read(self, kind: str, key: str) -> Artifact | None:
        """The entry if present and intact; None if absent; CacheError if corrupt."""
        entry = self.entry_dir(kind, key)
        if not entry.is_dir():
            return None
        problem = self.verify_entry(entry)
        if problem:
            raise CacheError(f"cache entry {kind}/{key} is corrupt: {problem}")
        meta = json.loads((entry / META).read_text())
        return Artifact(tensors=load_file(str(entry / TENSORS)), meta=meta.get("meta") or {}, from_cache=True)

    @staticmethod
    def verify_entry(entry: Path) -> str | None:
        """None when the entry's files exist and match their recorded checksums, else what is wrong."""
        meta_path = entry / META
        if not meta_path.is_file():
            return f"{META} missing"
        try:
            meta = json.loads(meta_path.read_text())
            expected = meta["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            return f"{META} unreadable ({error})"
        for name, digest in expected.items():
            path = entry / name
            if not path.is_file():
                return f"{name} missing"
            if file_sha256(path) != digest:
                return f"{name} checksum mismatch"
        return None

    def get_or_build(
        self, key: CacheKey, build: Callable[[], Artifact], *, label: str | None = None, stage: str | None = None
    ) -> Artifact:
        """Return the cached artifact for `key`, building and storing it under a lock if absent. The build is timed
        as the run's stage (`stage`, default the key's kind; `label`) (see `profiling`)."""
        kind, digest = key.kind, key.key
        name = label or kind
        lock_path = self.root / kind / f"{digest}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            try:
                found = self.read(kind, digest)
            except CacheError as error:
                log.warning("%s; rebuilding", error)
                shutil.rmtree(self.entry_dir(kind, digest), ignore_errors=True)
                found = None
            if found is not None:
                log.info("cache: loaded %s (%s/%s)", name, kind, digest)  # relative: no machine path in notebooks
                return found
            log.info("cache: building %s (%s/%s)", name, kind, digest)
            with timed(stage or kind, name):
                artifact = build()
            self.write(kind, digest, artifact, key.params)
            return artifact

    # -- maintenance -------------------------------------------------------------------------
    def entries(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for kind_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "checkpoints"):
            yield from sorted(p for p in kind_dir.iterdir() if p.is_dir() and not p.name.startswith(".tmp-"))

    def ls(self) -> list[dict[str, Any]]:
        rows = []
        for entry in self.entries():
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
            created = ""
            try:
                created = json.loads((entry / META).read_text()).get("created", "")
            except (OSError, json.JSONDecodeError):
                pass
            rows.append({"kind": entry.parent.name, "key": entry.name, "bytes": size, "created": created})
        return rows

    def verify(self) -> list[tuple[Path, str]]:
        """Every entry that fails its checksum, with the reason."""
        return [(entry, problem) for entry in self.entries() if (problem := self.verify_entry(entry))]

    def prune(self, kind: str | None = None, *, corrupt_only: bool = False) -> list[Path]:
        """Remove entries (of one kind, or only corrupt ones), stale temp dirs and lock files; returns what went."""
        removed = []
        bad = {entry for entry, _ in self.verify()}
        for entry in list(self.entries()):
            if (kind is None or entry.parent.name == kind) and (not corrupt_only or entry in bad):
                shutil.rmtree(entry)
                removed.append(entry)
        if self.root.is_dir():
            for kind_dir in self.root.iterdir():
                for stale in kind_dir.glob(".tmp-*") if kind_dir.is_dir() else ():
                    shutil.rmtree(stale, ignore_errors=True)
                    removed.append(stale)
            if kind is None and not corrupt_only:
                shutil.rmtree(self.root / "checkpoints", ignore_errors=True)
        return removed


def cached(
    key: CacheKey, build: Callable[[], Artifact], *, cache: Cache | None = None, label: str | None = None
) -> Artifact:
    """`Cache().get_or_build` for the default cache root."""
    return (cache or Cache()).get_or_build(key, build, label=label)


def state_to_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as plain contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


TrainingResult = list[dict[str, Any]] | Mapping[str, Any]


def cached_model(
    key: CacheKey,
    model: ModelT,
    train: Callable[[ModelT, Path], TrainingResult],
    *,
    cache: Cache | None = None,
    label: str | None = None,
) -> Trained[ModelT]:
    """`model` with its weights loaded from the cache, or trained by `train(model, checkpoint_dir)` and stored.

    `train` returns the per-epoch history, or a mapping with 'history' and any other JSON-able numbers (they become
    `Trained.meta`); it may checkpoint into `checkpoint_dir` so an interrupted build resumes; the checkpoints are
    removed once the entry is written. The model comes back in eval mode.
    """
    cache = cache or Cache()
    checkpoints = cache.checkpoint_dir(key.kind, key.key)

    def build() -> Artifact:
        result = train(model, checkpoints)
        meta = {"history": result} if isinstance(result, list) else dict(result)
        return Artifact(tensors=state_to_tensors(model), meta=meta)

    artifact = cache.get_or_build(key, build, label=label, stage="training")
    shutil.rmtree(checkpoints, ignore_errors=True)
    if artifact.from_cache:
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in artifact.tensors.items()})
    meta = dict(artifact.meta)
    history = list(meta.pop("history", []))
    return Trained(model=model.eval(), history=history, key=key.key, meta=meta)


def _index_to_json(index: pd.Index) -> dict[str, Any]:
    if isinstance(index, pd.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "names": list(index.names)}
    values = [list(v) if isinstance(v, tuple) else v for v in index.tolist()]
    return {
        "values": values,
        "names": list(index.names),
        "multi": isinstance(index, pd.MultiIndex),
        "dtype": str(index.dtype),
    }


def _index_from_json(data: dict[str, Any]) -> pd.Index:
    if "range" in data:
        return pd.RangeIndex(*data["range"], name=data["names"][0])
    if data["multi"]:
        return pd.MultiIndex.from_tuples([tuple(v) for v in data["values"]], names=data["names"])
    return pd.Index(data["values"], dtype=data["dtype"], name=data["names"][0])


def frames_to_artifact(frames: tuple[pd.DataFrame, ...]) -> Artifact:
    """DataFrames as an artifact that loads back exactly: numeric and boolean columns as tensors, labels, index and
    text columns as JSON (Python's float repr round-trips, pandas' own JSON rounds to 10 digits)."""
    tensors, meta = {}, []
    for f, frame in enumerate(frames):
        text = {}
        for c, (_, column) in enumerate(frame.items()):
            if column.dtype.kind in "biuf":
                tensors[f"{f}.{c}"] = torch.from_numpy(column.to_numpy().copy())
            else:
                text[str(c)] = column.tolist()
        meta.append(
            {
                "index": _index_to_json(frame.index),
                "columns": _index_to_json(frame.columns),
                "dtypes": [str(d) for d in frame.dtypes],
                "text": text,
            }
        )
    return Artifact(tensors=tensors, meta={"frames": meta})


def frames_from_artifact(artifact: Artifact) -> tuple[pd.DataFrame, ...]:
    """The DataFrames `frames_to_artifact` stored, with their dtypes, index and column labels."""
    frames = []
    for f, meta in enumerate(artifact.meta["frames"]):
        columns = {
            c: (
                artifact.tensors[f"{f}.{c}"].numpy()
                if str(c) not in meta["text"]
                else np.asarray(meta["text"][str(c)], dtype=object)
            ).astype(dtype)
            for c, dtype in enumerate(meta["dtypes"])
        }
        frame = pd.DataFrame(columns, index=_index_from_json(meta["index"]))
        frame.columns = _index_from_json(meta["columns"])
        frames.append(frame)
    return tuple(frames)


def cached_frames(
    key: CacheKey,
    build: Callable[[], tuple[pd.DataFrame, ...]],
    *,
    cache: Cache | None = None,
    label: str | None = None,
) -> tuple[pd.DataFrame, ...]:
    """Tables of results (an evaluation the notebook reports), built once per key and then loaded exactly."""
    artifact = (cache or Cache()).get_or_build(
        key, lambda: frames_to_artifact(tuple(build())), label=label, stage="evaluation"
    )
    return frames_from_artifact(artifact)
