# Softmax regression from scratch (D2L 3.6) on a Fashion-MNIST slice. d2l.py's
# load_fashion_mnist reads the slice the harness injects.
import torch
from d2l import *  # load_fashion_mnist, accuracy, the training loops (d2l.py)

torch.manual_seed(0)


num_inputs, num_outputs = 784, 10
W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
b = torch.zeros(num_outputs, requires_grad=True)


def softmax(X):
    X_exp = torch.exp(X)
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition  # broadcast over the columns


def net(X):
    return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)


def cross_entropy(y_hat, y):
    return -torch.log(y_hat[range(len(y_hat)), y])


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


# the chapter's small checks
X = torch.normal(0, 1, (2, 5))
row_sums = softmax(X).sum(1)
y = torch.tensor([0, 2])
y_hat = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]])
picked = y_hat[[0, 1], y]
ce = cross_entropy(y_hat, y)
toy_acc = accuracy(y_hat, y) / len(y)

train_iter, test_iter = load_fashion_mnist(batch_size=64)
X0, y0 = next(iter(train_iter))
acc_before = evaluate_accuracy(net, test_iter)
lr = 0.1
history = train(net, train_iter, test_iter, cross_entropy, 5, lambda batch_size: sgd([W, b], lr, batch_size))

RESULT = {
    "row_sums": row_sums, "picked": picked, "ce": ce, "toy_acc": toy_acc,
    "batch_shapes": (tuple(X0.shape), tuple(y0.shape)), "batch_dtypes": (str(X0.dtype), str(y0.dtype)),
    "acc_before": acc_before,
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
