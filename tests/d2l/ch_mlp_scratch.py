# A multilayer perceptron from scratch (D2L 4.2) on a Fashion-MNIST slice: nn.Parameter
# weights, a hand-written ReLU, nn.CrossEntropyLoss(reduction='none') and torch.optim.SGD. d2l.py's
# load_fashion_mnist reads the slice the harness injects.
import torch
from torch import nn
from d2l import *  # load_fashion_mnist, accuracy, the training loops (d2l.py)

torch.manual_seed(0)


num_inputs, num_outputs, num_hiddens = 784, 10, 256
W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens, requires_grad=True) * 0.01)
b1 = nn.Parameter(torch.zeros(num_hiddens, requires_grad=True))
W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs, requires_grad=True) * 0.01)
b2 = nn.Parameter(torch.zeros(num_outputs, requires_grad=True))
params = [W1, b1, W2, b2]


def relu(X):
    a = torch.zeros_like(X)
    return torch.max(X, a)


def net(X):
    X = X.reshape((-1, num_inputs))
    H = relu(X @ W1 + b1)  # @ is matrix multiplication
    return H @ W2 + b2


relu_demo = relu(torch.tensor([-2.0, -0.5, 0.0, 1.5]))
loss = nn.CrossEntropyLoss(reduction='none')
updater = torch.optim.SGD(params, lr=0.1)

train_iter, test_iter = load_fashion_mnist(batch_size=64)
X0, y0 = next(iter(train_iter))
acc_before = evaluate_accuracy(net, test_iter)
history = train(net, train_iter, test_iter, loss, 10, updater)

RESULT = {
    "relu_demo": relu_demo, "leaf": (W1.is_leaf, W1.requires_grad), "param_shapes": [tuple(p.shape) for p in params],
    "batch_shapes": (tuple(X0.shape), tuple(y0.shape)), "acc_before": acc_before,
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
