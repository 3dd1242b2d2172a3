# Softmax regression, concise (D2L 3.7) on a Fashion-MNIST slice: nn.Flatten + nn.Linear,
# Module.apply with nn.init.normal_, nn.CrossEntropyLoss(reduction='none'), torch.optim.SGD. d2l.py's
# load_fashion_mnist reads the slice the harness injects.
import torch
from torch import nn
from torch.utils import data
from d2l import *  # load_fashion_mnist, accuracy, the training loops (d2l.py)

torch.manual_seed(0)


net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def init_weights(m):
    if type(m) == nn.Linear:
        nn.init.normal_(m.weight, std=0.01)


net.apply(init_weights)
weight_std = float(net[1].weight.data.std())

loss = nn.CrossEntropyLoss(reduction='none')
trainer = torch.optim.SGD(net.parameters(), lr=0.1)

train_iter, test_iter = load_fashion_mnist(batch_size=64)
X0, y0 = next(iter(train_iter))
acc_before = evaluate_accuracy(net, test_iter)
history = train(net, train_iter, test_iter, loss, 5, trainer)

RESULT = {
    "weight_std": weight_std, "loss_shape": tuple(loss(net(X0), y0).shape),
    "batch_shapes": (tuple(X0.shape), tuple(y0.shape)), "acc_before": acc_before,
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
