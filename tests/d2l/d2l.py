# The book's d2l helpers that several chapters share (Fashion-MNIST loaders, accuracy, the
# chapter 3 and chapter 6 training loops), written once as the book keeps them in its d2l
# package. Chapters take them with `from d2l import *`; the harness builds this module for each
# run with the same import swap as the chapter, and injects the data slice and print.
import torch
from torch import nn
from torch.utils import data

init_max = []  # train_ch6 records the last layer's largest weight after its init here


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


def evaluate_accuracy_gpu(net, data_iter, device=None):
    """Accuracy of net on data_iter, computed on net's device."""
    if isinstance(net, nn.Module):
        net.eval()  # e.g. batch norm uses its running statistics
        if not device:
            device = next(iter(net.parameters())).device
    metric = Accumulator(2)  # correct, seen
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def train_ch6(net, train_iter, test_iter, num_epochs, lr, device):
    """D2L's training loop for the convolutional chapters."""
    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)
    net.apply(init_weights)
    # the last layer's largest weight: Xavier's bound for (84 -> 10) is 0.25, PyTorch's default 0.11
    init_max.append(float(net[-1].weight.data.abs().max()))
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    history = []
    for epoch in range(num_epochs):
        metric = Accumulator(3)  # loss sum, correct, seen
        net.train()
        for X, y in train_iter:
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(l * X.shape[0], accuracy(y_hat, y), X.shape[0])
        train_l, train_acc = metric[0] / metric[2], metric[1] / metric[2]
        test_acc = evaluate_accuracy_gpu(net, test_iter)
        history.append((train_l, train_acc, test_acc))
        print(f'epoch {epoch + 1}, loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}')
    return history


def try_gpu(i=0):
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f'cuda:{i}')
    return torch.device('cpu')
