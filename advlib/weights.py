"""Safe loading of weight files: safetensors, or `torch.load(weights_only=True)`; never a full unpickle.

A `.pt`/`.pth` file is a pickle, and unpickling runs whatever code the file names; torch's weights-only unpickler
accepts tensors and plain containers only, so a crafted file is refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

SAFE_SUFFIXES = (".safetensors", ".pt", ".pth")


class UnsafeWeightsError(ValueError):
    """A weight file that holds more than tensors (e.g. a pickled code payload) and was refused."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file (.safetensors, or a .pt/.pth state dict read with weights_only=True) on the CPU.

    A checkpoint dict holding the weights under 'state_dict' or 'model' is unwrapped."""
    path = Path(path)
    if path.suffix not in SAFE_SUFFIXES:
        raise ValueError(f"weight file {str(path)!r} has suffix {path.suffix!r}; allowed: {', '.join(SAFE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"weight file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise ValueError(f"weight file {str(path)!r} is not a valid safetensors file: {error}") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeWeightsError(
            f"weight file {str(path)!r} was refused: it holds objects other than tensors, which "
            f"loading would execute ({str(error).splitlines()[0]})"
        ) from error
    except (EOFError, RuntimeError) as error:
        raise ValueError(f"weight file {str(path)!r} is truncated or not a torch file: {error}") from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"weight file {str(path)!r} does not hold a state dict of tensors (got {type(state).__name__})"
        )
    return state
