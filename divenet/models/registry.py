"""The zoo's registry: each model name maps to a builder and D2L's training recipe for it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    """D2L's hyper-parameters for a model on Fashion-MNIST; the CLI's defaults."""

    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 256
    resize: int | None = None  # input side length the model is trained at
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    momentum: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: object
    recipe: Recipe = field(default_factory=Recipe)
    input_size: int = 28  # the smallest side the design is meant for (used by tests, summaries)
    kind: str = "image"  # "image" (N, C, H, W) or "text" (token ids)
    description: str = ""  # one line for ``divenet models``: given, or the docstring's first sentence


def _first_sentence(doc):
    text = " ".join((doc or "").split()).replace("``", "")
    end = re.search(r"(?<!\.)\.(?=\s+[A-Z])", text)  # not an ellipsis ("b1 .. b5")
    return text[:end.end()] if end else text


_MODELS: dict[str, ModelSpec] = {}


def register(name, recipe=None, input_size=28, kind="image", description=None):
    def wrap(builder):
        _MODELS[name] = ModelSpec(name, builder, recipe or Recipe(), input_size, kind,
                                  description or _first_sentence(builder.__doc__))
        return builder

    return wrap


def list_models():
    return sorted(_MODELS)


def get_spec(name) -> ModelSpec:
    key = name.lower()
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[key]


def get_model(name, num_classes=10, in_channels=1, **kwargs):
    """Build a zoo model by name, e.g. ``get_model('resnet18', num_classes=1000, in_channels=3)``."""
    return get_spec(name).builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
