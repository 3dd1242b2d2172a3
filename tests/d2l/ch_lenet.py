# LeNet (D2L 7.6) trained with D2L's loop (train_ch6: Module.apply with Xavier init,
# nn.CrossEntropyLoss, torch.optim.SGD, train/eval modes) on a 10000-image Fashion-MNIST slice:
# the sigmoid network stays on its 2.30 plateau for 200 to 600 steps of 256, depending on the
# initial weights (measured over seeds; divenet's seed-0 weights: past 940), so it trains for
# 40 epochs (1570 steps). The harness injects
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



net = nn.Sequential(
    nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Flatten(),
    nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
    nn.Linear(120, 84), nn.Sigmoid(),
    nn.Linear(84, 10))

# the book's shape walk through the layers
X = torch.rand(size=(1, 1, 28, 28), dtype=torch.float32)
layer_shapes = []
for layer in net:
    X = layer(X)
    layer_shapes.append((layer.__class__.__name__, tuple(X.shape)))
    print(layer.__class__.__name__, 'output shape: \t', X.shape)

train_iter, test_iter = load_fashion_mnist(batch_size=256)
X0, y0 = next(iter(train_iter))
acc_before = evaluate_accuracy_gpu(net, test_iter)
init_max = []
history = train_ch6(net, train_iter, test_iter, 40, 0.9, try_gpu())

RESULT = {
    "layer_shapes": layer_shapes, "acc_before": acc_before, "init_max": init_max[0], "batch_shapes": (tuple(X0.shape), tuple(y0.shape)),
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
