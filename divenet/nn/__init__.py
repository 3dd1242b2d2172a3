"""Layers and models: ``Module`` and PyTorch-named layers built on ``divenet.functional``."""
from .. import functional  # torch.nn.functional's place
from . import init
from .layers import (
    AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d,
    AvgPool2d, BatchNorm1d, BatchNorm2d, ChannelShuffle, Conv1d, Conv2d, Dropout, Embedding,
    Flatten, GELU, Hardtanh, Identity, LayerNorm, LazyBatchNorm1d, LazyBatchNorm2d, LazyConv1d,
    LazyConv2d, LazyLinear, LeakyReLU, Linear, LocalResponseNorm, LogSoftmax, MaxPool1d, MaxPool2d,
    ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh, Unflatten,
)
from .loss import (
    BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss,
)
from .module import (
    Module, ModuleDict, ModuleList, Parameter, ParameterDict, ParameterList, Sequential,
)
from .rnn import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell


def __getattr__(name):
    if name == "utils":  # imported on first use: it reaches into divenet.optim
        import importlib

        return importlib.import_module(".utils", __name__)
    raise AttributeError(f"module 'divenet.nn' has no attribute {name!r}")
