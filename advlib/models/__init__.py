"""Model zoo behind one registry: `create_model(name, **kw)`; every model takes images in [0, 1]."""

from advlib.models import lenet, mixgen, mlp, resnet, vgg  # noqa: F401  (importing registers the models)
from advlib.models.ensemble import ENSEMBLE_MODES, Ensemble
from advlib.models.layers import IMAGENET_NORMALIZE, Normalize
from advlib.models.registry import count_parameters, create_model, create_model_for, list_models, register_model

__all__ = [
    "create_model_for",
    "ENSEMBLE_MODES",
    "Ensemble",
    "IMAGENET_NORMALIZE",
    "Normalize",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
