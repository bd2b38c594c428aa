"""Checks a run's parameters against this machine before a notebook's kernel starts (device present, dataset present
or downloadable into a writable folder, REGroup's k within the networks' voting layers), so that `advlib run` can
refuse a run in one line instead of failing minutes later with a notebook traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, cast

from .params import DataSpec, Params, PretrainedSpec, RegroupParams
from .runtime import data_root, resolve_device


def problems(stem: str, params: Params) -> list[str]:
    """One line per problem found; empty when the run can start. `params` is notebook `stem`'s (`params.load`):
    every notebook's schema has a `data` block, and the "regroup" one is a `RegroupParams`."""
    found = _device(params.device) + _dataset(cast(Any, params).data) + _backends(params)
    if stem == "regroup" and not found:
        found += _regroup_k(cast(RegroupParams, params))
    return found


def _device(device: str) -> list[str]:
    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as error:
        return [f"device: {error}"]
    return []


def _writable(folder: Path) -> bool:
    """True if `folder`, or the nearest existing folder above it (where it would be created), is writable."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return False
    try:  # a real probe: os.access says yes to root even on a read-only folder
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False


def _dataset(data: DataSpec) -> list[str]:
    from .data import dataset_info, load_dataset

    root = data_root()
    if data.download:
        if not _writable(root):
            return [
                f"data: {data.name!r} would be downloaded into {root}, which is not writable; "
                f"set ADVLIB_DATA to a writable folder"
            ]
        return []
    for split in dataset_info(data.name).splits:
        try:
            load_dataset(data.name, split, n=1)
        except FileNotFoundError as error:
            return [f"data: {error}; or add --set data.download=true"]
    return []


def _regroup_k(params: RegroupParams) -> list[str]:
    """REGroup votes with the top k of a network's voting layers, so k may not exceed any network's count."""
    if params.k is None:
        return []
    from .data import dataset_info
    from .defenses.regroup import voter_layers
    from .models import create_model_for

    info = dataset_info(params.data.name)
    found = []
    for name, spec in params.architectures.items():
        if spec.layers is not None:
            count = len(spec.layers)
        else:
            model_name = spec.train.model if spec.train is not None else cast(PretrainedSpec, spec.pretrained).model
            count = len(voter_layers(create_model_for(model_name, info)))
        if params.k > count:
            found.append(
                f"k: k={params.k} exceeds the {count} voting layers of {name!r}; choose k between 1 and "
                f"{count} (or leave k unset for the paper's rule)"
            )
    return found


def _attack_names(node: Any) -> set[str]:
    """Every attack named in the parameters (any mapping with a `name` that is a registered attack)."""
    from .attacks import list_attacks

    if isinstance(node, dict):
        own = {node["name"]} if isinstance(node.get("name"), str) and node["name"] in list_attacks() else set()
        return own.union(*(_attack_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_attack_names(v) for v in node))
    return set()


def _backends(params: Params) -> list[str]:
    """Attacks whose library is an optional extra that is not installed."""
    from .attacks import attack_info
    from .attacks.backends import missing_backend

    found = []
    for name in sorted(_attack_names(params.model_dump(mode="json"))):
        install = missing_backend(attack_info(name).backend)
        if install:
            found.append(f"attack {name!r} needs {attack_info(name).backend}, which is not installed: {install}")
    return found
