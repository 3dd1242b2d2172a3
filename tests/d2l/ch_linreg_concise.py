# Linear regression, concise (D2L 3.3): TensorDataset + DataLoader, nn.Sequential(nn.Linear),
# initialization through .data, nn.MSELoss and torch.optim.SGD.
import torch
from torch import nn
from torch.utils import data


def make_data(w, b, n):
    X = torch.normal(0, 1, (n, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


true_w = torch.tensor([2, -3.4])
true_b = 4.2
features, labels = make_data(true_w, true_b, 1000)


def load_array(arrays, batch_size, is_train=True):
    dataset = data.TensorDataset(*arrays)
    return data.DataLoader(dataset, batch_size, shuffle=is_train)


batch_size = 10
data_iter = load_array((features, labels), batch_size)
X0, y0 = next(iter(data_iter))
X1, _ = next(iter(data_iter))
shuffled = (bool((X0 != features[:batch_size]).any()), bool((X0 != X1).any()))

net = nn.Sequential(nn.Linear(2, 1))
net[0].weight.data.normal_(0, 0.01)
net[0].bias.data.fill_(0)
init_w = [float(v) for v in net[0].weight.data.reshape(-1)]
init_b = float(net[0].bias.data[0])

loss = nn.MSELoss()
trainer = torch.optim.SGD(net.parameters(), lr=0.03)

num_epochs = 3
losses = [float(loss(net(features), labels))]
log = []
for epoch in range(num_epochs):
    for X, y in data_iter:
        l = loss(net(X), y)
        trainer.zero_grad()
        l.backward()
        trainer.step()
    l = loss(net(features), labels)
    losses.append(float(l))
    log.append(f'epoch {epoch + 1}, loss {l:f}')
    print(log[-1])

trainer.zero_grad()
grads_cleared = all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in net.parameters())
w = net[0].weight.data
b = net[0].bias.data
print('error in estimating w:', true_w - w.reshape(true_w.shape))
print('error in estimating b:', true_b - b)

RESULT = {
    "num_batches": len(data_iter), "batch_shapes": (tuple(X0.shape), tuple(y0.shape)),
    "init_w": init_w, "init_b": init_b, "losses": losses, "log": log,
    "w": w.reshape(-1), "b": float(b[0]),
    "num_params": len(list(net.parameters())),
    "shuffled": shuffled, "grads_cleared": grads_cleared,
}
