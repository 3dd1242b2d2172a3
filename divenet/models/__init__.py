"""The model zoo: ``get_model(name, num_classes=10, in_channels=1)`` and ``list_models()``.
One file per family; each registers its models with D2L's training recipe."""
from . import lenet  # noqa: F401  (registers its models)
from .registry import ModelSpec, Recipe, get_model, get_spec, list_models, register
from . import alexnet, densenet, googlenet, mobilenet, nin, resnet, shufflenet, vgg  # noqa: F401,E402
from . import charlm, rnn  # noqa: F401,E402  (recurrent zoo: lstm, gru, charlm)
