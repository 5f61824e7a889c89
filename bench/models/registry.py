"""The model registry, a leaf: ``@register_model(name)`` on a builder ``(num_classes, input_shape)``.

Model files import this module only; :mod:`kdbench.models` imports the model files (which
registers them) and :mod:`kdbench.models.factory` builds any registered or timm model by name.
"""

from __future__ import annotations

from collections.abc import Callable

from kdbench.models.base import Classifier
from kdbench.plugins.registry import Registry

ModelBuilder = Callable[[int, tuple[int, int, int]], Classifier]
MODELS: Registry[ModelBuilder] = Registry("model")
register_model = MODELS.register
