# Batch normalization from scratch (D2L 8.5): moving statistics updated outside autograd,
# torch.is_grad_enabled() to tell training from prediction, a BatchNorm Module with learnable
# scale and shift, used in LeNet and trained with D2L's loop (train_ch6) on a Fashion-MNIST slice.
# The harness injects train_images, train_labels, test_images, test_labels (uint8 NumPy arrays).
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




def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    if not torch.is_grad_enabled():
        # prediction: normalize with the moving statistics
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:  # fully connected: statistics per feature
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:  # convolutional: statistics per channel, over batch, height and width
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = (1.0 - momentum) * moving_mean + momentum * mean
        moving_var = (1.0 - momentum) * moving_var + momentum * var
    Y = gamma * X_hat + beta  # scale and shift
    return Y, moving_mean.data, moving_var.data


class BatchNorm(nn.Module):
    """num_features: outputs of a fully connected layer or channels of a convolution;
    num_dims: 2 for a fully connected layer, 4 for a convolutional one."""
    def __init__(self, num_features, num_dims):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))  # learned scale, starts at 1
        self.beta = nn.Parameter(torch.zeros(shape))  # learned shift, starts at 0
        self.moving_mean = torch.zeros(shape)  # plain tensors: not parameters
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        Y, self.moving_mean, self.moving_var = batch_norm(
            X, self.gamma, self.beta, self.moving_mean, self.moving_var, eps=1e-5, momentum=0.1)
        return Y


# one layer on a batch: zero mean and unit variance per channel while training
bn = BatchNorm(3, num_dims=4)
X = torch.normal(2.0, 3.0, (8, 3, 5, 5))
Y = bn(X)
train_stats = (Y.mean(dim=(0, 2, 3)), ((Y - Y.mean(dim=(0, 2, 3), keepdim=True)) ** 2).mean(dim=(0, 2, 3)))
moving_after_one = (bn.moving_mean.reshape(-1), bn.moving_var.reshape(-1))
with torch.no_grad():
    Y_pred = bn(X)  # prediction uses the moving statistics
bn_params = [tuple(p.shape) for p in bn.parameters()]

net = nn.Sequential(
    nn.Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
    nn.Linear(16 * 4 * 4, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
    nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(),
    nn.Linear(84, 10))

train_iter, test_iter = load_fashion_mnist(batch_size=64)
X0, y0 = next(iter(train_iter))
acc_before = evaluate_accuracy_gpu(net, test_iter)
init_max = []
history = train_ch6(net, train_iter, test_iter, 2, 1.0, torch.device('cpu'))

RESULT = {
    "train_stats": train_stats, "moving_after_one": moving_after_one, "X": X, "Y_pred": Y_pred,
    "bn_params": bn_params, "num_params": len(list(net.parameters())),
    "gamma": net[1].gamma.reshape(-1), "moving_mean": net[1].moving_mean.reshape(-1),
    "batch_shapes": (tuple(X0.shape), tuple(y0.shape)), "acc_before": acc_before, "init_max": init_max[0],
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
