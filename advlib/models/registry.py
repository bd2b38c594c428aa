"""Model registry in the style of timm: `@register_model(name)` builders, `create_model(name, **kw)`."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import TypeVar

from torch import nn

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder `fn(**kw) -> nn.Module` under `name` (names are unique)."""

    def decorator(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = builder
        return builder

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` filters them with shell wildcards (e.g. 'lenet*')."""
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model `name`; unknown names raise ValueError, unknown kwargs TypeError."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    builder = _MODELS[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TypeError(
                f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
                f"it accepts {', '.join(params) or 'no arguments'}"
            )
    return builder(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of `model` (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def create_model_for(name: str, info, **kwargs) -> nn.Module:
    """`create_model` with in_channels, num_classes, input_size and normalisation taken from a DatasetInfo
    (only those the builder accepts; explicit kwargs win)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    accepted = inspect.signature(_MODELS[name]).parameters
    implied = {
        "in_channels": info.shape[0],
        "num_classes": info.num_classes,
        "input_size": tuple(info.shape[1:]),
        "normalize": (tuple(info.mean), tuple(info.std)),
    }
    return create_model(name, **{**{k: v for k, v in implied.items() if k in accepted}, **kwargs})
