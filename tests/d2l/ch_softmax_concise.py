# Softmax regression, concise (D2L 3.7) on a Fashion-MNIST slice: nn.Flatten + nn.Linear,
# Module.apply with nn.init.normal_, nn.CrossEntropyLoss(reduction='none'), torch.optim.SGD. The harness injects
# train_images, train_labels, test_images, test_labels (uint8 NumPy arrays).
import torch
from torch import nn
from torch.utils import data

torch.manual_seed(0)


def load_fashion_mnist(batch_size):
    """The injected slices as DataLoaders of (1, 28, 28) float images in [0, 1] and int64 labels."""
    def dataset(images, labels):
        X = torch.tensor(images, dtype=torch.float32).reshape((-1, 1, 28, 28)) / 255
        return data.TensorDataset(X, torch.from_numpy(labels).long())
    return (data.DataLoader(dataset(train_images, train_labels), batch_size, shuffle=True),
            data.DataLoader(dataset(test_images, test_labels), batch_size, shuffle=False))


class Accumulator:
    """Running sums of n quantities."""
    def __init__(self, n):
        self.sums = [0.0] * n

    def add(self, *values):
        self.sums = [s + float(v) for s, v in zip(self.sums, values)]

    def __getitem__(self, i):
        return self.sums[i]


def accuracy(y_hat, y):
    """Number of correct predictions."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def evaluate_accuracy(net, data_iter):
    if isinstance(net, torch.nn.Module):
        net.eval()
    metric = Accumulator(2)  # correct, seen
    with torch.no_grad():
        for X, y in data_iter:
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def train_epoch(net, train_iter, loss, updater):
    if isinstance(net, torch.nn.Module):
        net.train()
    metric = Accumulator(3)  # loss sum, correct, seen
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
    return metric[0] / metric[2], metric[1] / metric[2]


def train(net, train_iter, test_iter, loss, num_epochs, updater):
    history = []
    for epoch in range(num_epochs):
        train_loss, train_acc = train_epoch(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        history.append((train_loss, train_acc, test_acc))
        print(f'epoch {epoch + 1}, loss {train_loss:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}')
    return history



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
