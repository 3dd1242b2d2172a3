"""The public differentiable functions, with PyTorch's names and signatures (``import
divenet.functional as F``). Each submodule checks its arguments, naming the op and the shapes
in any error, then applies the matching kernel from ``divenet.ops``."""
from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
