# LeNet (D2L 7.6) trained with D2L's loop (train_ch6: Module.apply with Xavier init,
# nn.CrossEntropyLoss, torch.optim.SGD, train/eval modes) on a 10000-image Fashion-MNIST slice:
# the sigmoid network stays on its 2.30 plateau for 200 to 600 steps of 256, depending on the
# initial weights (measured over seeds; divenet's seed-0 weights: past 940), so it trains for
# 40 epochs (1570 steps). d2l.py's
# load_fashion_mnist reads the slice the harness injects.
import torch
from torch import nn
from d2l import *  # load_fashion_mnist, accuracy, the training loops (d2l.py)

torch.manual_seed(0)


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
history = train_ch6(net, train_iter, test_iter, 40, 0.9, try_gpu())

RESULT = {
    "layer_shapes": layer_shapes, "acc_before": acc_before, "init_max": init_max[0], "batch_shapes": (tuple(X0.shape), tuple(y0.shape)),
    "losses": [h[0] for h in history], "train_acc": history[-1][1], "test_acc": history[-1][2],
}
