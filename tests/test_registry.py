import pytest

from kdbench.api import ATTACKS, DEFENSES
from kdbench.data.catalogue import DATASETS
from kdbench.errors import ConfigError
from kdbench.models import MODELS, create_model
from kdbench.plugins.discovery import load_plugins
from kdbench.plugins.registry import Registry


@pytest.mark.parametrize(
    "registry,known",
    [(ATTACKS, "kd"), (DEFENSES, "nasty"), (MODELS, "digits_cnn"), (DATASETS, "digits")],
)
def test_unknown_names_list_the_known_ones(registry, known):
    load_plugins()
    with pytest.raises(ConfigError, match=rf"unknown {registry.kind} 'nope'; known {registry.kind}s: .*{known}"):
        registry.get("nope")


def test_duplicate_registration_names_both_sources():
    registry: Registry[object] = Registry("attack")
    registry.add("x", object, source="pkg_one")
    with pytest.raises(ConfigError, match="registered twice: by pkg_one and by pkg_two"):
        registry.add("x", object, source="pkg_two")


def test_create_model_builds_a_timm_model_by_name():
    model = create_model("timm/resnet10t", num_classes=7, input_shape=(1, 8, 8))
    import torch

    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 7)
    assert model.head(model.forward_features(x)).shape == (2, 7)
