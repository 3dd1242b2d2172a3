"""Layers and models: ``Module`` and PyTorch-named layers built on ``divenet.functional``."""
from . import init
from .layers import (
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, ChannelShuffle, Conv1d,
    Conv2d, Dropout, Embedding, Flatten, GELU, Identity, LayerNorm, LeakyReLU, Linear,
    LocalResponseNorm, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh,
)
from .module import Module, ModuleList, Parameter, Sequential
from .rnn import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell
