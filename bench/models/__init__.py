"""The suite's networks: importing this package registers every built-in model.

``create_model(name, num_classes, input_shape)`` builds any of them, or any timm model as
``timm/<name>``. The registry itself lives in the leaf module :mod:`kdbench.models.registry`.
"""

from kdbench.models import (  # noqa: F401  (each registers its networks)
    cnn,
    digits,
    mobilenetv2,
    preact_resnet,
    resnet_cifar,
    resnext,
    shufflenetv2,
    whitened,
)
from kdbench.models.base import Classifier
from kdbench.models.factory import TIMM_PREFIX, architecture_fingerprint, check_model_name, create_model, probe_model
from kdbench.models.registry import MODELS, ModelBuilder, register_model

__all__ = [
    "MODELS",
    "TIMM_PREFIX",
    "Classifier",
    "ModelBuilder",
    "architecture_fingerprint",
    "check_model_name",
    "create_model",
    "probe_model",
    "register_model",
]
