# Batch normalization from scratch (D2L 8.5): moving statistics updated outside autograd,
# torch.is_grad_enabled() to tell training from prediction, a BatchNorm Module with learnable
# scale and shift, used in LeNet and trained with D2L's loop (train_ch6) on a Fashion-MNIST slice.
# d2l.py's load_fashion_mnist reads the slice the harness injects.
import torch
from torch import nn
from d2l import *  # load_fashion_mnist, accuracy, the training loops (d2l.py)

torch.manual_seed(0)


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
history = train_ch6(net, train_iter, test_iter, 2, 1.0, torch.device('cpu'))

RESULT = {
    "train_stats": train_stats, "moving_after_one": moving_after_one, "X": X, "Y_pred": Y_pred,
    "bn_params": bn_params, "num_params": len(list(net.parameters())),
    "gamma": net[1].gamma.reshape(-1), "moving_mean": net[1].moving_mean.reshape(-1),
    "batch_shapes": (tuple(X0.shape), tuple(y0.shape)), "acc_before": acc_before, "init_max": init_max[0],
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
