# Linear regression from scratch (D2L 3.2): synthetic data, a shuffling minibatch generator,
# hand-written model, squared loss and minibatch SGD on leaf tensors.
import random

import torch


def make_data(w, b, n):
    """y = Xw + b + Gaussian noise."""
    X = torch.normal(0, 1, (n, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


true_w = torch.tensor([2, -3.4])
true_b = 4.2
features, labels = make_data(true_w, true_b, 1000)


def data_iter(batch_size, features, labels):
    n = len(features)
    order = list(range(n))
    random.shuffle(order)  # visit the examples in random order
    for start in range(0, n, batch_size):
        idx = torch.tensor(order[start:min(start + batch_size, n)])
        yield features[idx], labels[idx]


batch_size = 10
X0, y0 = next(data_iter(batch_size, features, labels))

w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
b = torch.zeros(1, requires_grad=True)


def linreg(X, w, b):
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


lr, num_epochs = 0.03, 3
net, loss = linreg, squared_loss
with torch.no_grad():
    losses = [float(loss(net(features, w, b), labels).mean())]
for epoch in range(num_epochs):
    for X, y in data_iter(batch_size, features, labels):
        l = loss(net(X, w, b), y)
        l.sum().backward()  # l is (batch, 1): sum to a scalar first
        sgd([w, b], lr, batch_size)
    with torch.no_grad():
        train_l = loss(net(features, w, b), labels)
        losses.append(float(train_l.mean()))
        print(f'epoch {epoch + 1}, loss {float(train_l.mean()):f}')

w_err = true_w - w.reshape(true_w.shape)
b_err = true_b - b
print(f'error in estimating w: {w_err}')
print(f'error in estimating b: {b_err}')

RESULT = {
    "features_shape": tuple(features.shape), "labels_shape": tuple(labels.shape),
    "batch_shapes": (tuple(X0.shape), tuple(y0.shape)),
    "losses": losses, "w": w.detach().reshape(-1), "b": float(b.detach()), "w_err": w_err.detach(),
    "grad_after_step": w.grad,
}
