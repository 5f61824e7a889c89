"""Any timm architecture by name (``student=timm/resnet18``), randomly initialised, no download."""

from __future__ import annotations

from torch import Tensor, nn

from kdbench.errors import ConfigError
from kdbench.models.base import Classifier


class TimmClassifier(Classifier):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = model.get_classifier()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def check_timm_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:10]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown timm model {name!r} (use timm/<name> with a name from timm.list_models()){hint}")


def create_timm_model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> Classifier:
    import timm

    check_timm_name(name)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0])
    if not isinstance(model.get_classifier(), nn.Linear):
        raise ConfigError(f"timm model {name!r} has no single linear classifier head; kdbench needs one")
    return TimmClassifier(model)
