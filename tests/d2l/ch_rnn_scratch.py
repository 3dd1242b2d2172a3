# A recurrent neural network from scratch (D2L 9.5): one-hot inputs, hand-made parameters,
# tanh recurrence with torch.mm, gradient clipping by hand, sequential minibatches, and the
# perplexity of a character model on a small repeated text.
import math
import random

import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)

TEXT = ("the time traveller held in his hand a glittering metallic framework "
        "scarcely larger than a small clock and very delicately made "
        "there was ivory in it and some transparent crystalline substance ") * 8


class Vocab:
    """Characters to indices and back, most frequent first."""
    def __init__(self, tokens):
        counts = {}
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
        self.idx_to_token = sorted(counts, key=lambda t: (-counts[t], t))
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}

    def __len__(self):
        return len(self.idx_to_token)

    def __getitem__(self, token):
        return self.token_to_idx[token]


vocab = Vocab(TEXT)
corpus = [vocab[c] for c in TEXT]


def seq_data_iter_sequential(corpus, batch_size, num_steps):
    """Minibatches whose i-th rows continue each other from one batch to the next."""
    offset = random.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(corpus[offset: offset + num_tokens])
    Ys = torch.tensor(corpus[offset + 1: offset + 1 + num_tokens])
    Xs, Ys = Xs.reshape(batch_size, -1), Ys.reshape(batch_size, -1)
    num_batches = Xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        yield Xs[:, i: i + num_steps], Ys[:, i: i + num_steps]


def get_params(vocab_size, num_hiddens, device):
    num_inputs = num_outputs = vocab_size

    def normal(shape):
        return torch.randn(size=shape, device=device) * 0.01

    W_xh = normal((num_inputs, num_hiddens))
    W_hh = normal((num_hiddens, num_hiddens))
    b_h = torch.zeros(num_hiddens, device=device)
    W_hq = normal((num_hiddens, num_outputs))
    b_q = torch.zeros(num_outputs, device=device)
    params = [W_xh, W_hh, b_h, W_hq, b_q]
    for param in params:
        param.requires_grad_(True)
    return params


def init_rnn_state(batch_size, num_hiddens, device):
    return (torch.zeros((batch_size, num_hiddens), device=device),)


def rnn(inputs, state, params):
    # inputs: (num_steps, batch_size, vocab_size)
    W_xh, W_hh, b_h, W_hq, b_q = params
    H, = state
    outputs = []
    for X in inputs:
        H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
        outputs.append(torch.mm(H, W_hq) + b_q)
    return torch.cat(outputs, dim=0), (H,)


class RNNModelScratch:
    def __init__(self, vocab_size, num_hiddens, device, get_params, init_state, forward_fn):
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params = get_params(vocab_size, num_hiddens, device)
        self.init_state, self.forward_fn = init_state, forward_fn

    def __call__(self, X, state):
        X = F.one_hot(X.T, self.vocab_size).type(torch.float32)
        return self.forward_fn(X, state, self.params)

    def begin_state(self, batch_size, device):
        return self.init_state(batch_size, self.num_hiddens, device)


def predict(prefix, num_preds, net, vocab, device):
    """Warm the state up on prefix, then generate num_preds characters greedily."""
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab[prefix[0]]]
    get_input = lambda: torch.tensor([outputs[-1]], device=device).reshape((1, 1))
    for y in prefix[1:]:
        _, state = net(get_input(), state)
        outputs.append(vocab[y])
    for _ in range(num_preds):
        y, state = net(get_input(), state)
        outputs.append(int(y.argmax(dim=1).reshape(1)))
    return ''.join([vocab.idx_to_token[i] for i in outputs])


def grad_norm(params):
    return torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))


def grad_clipping(net, theta):
    """Scale the gradients down, in place, to a global norm of at most theta."""
    if isinstance(net, nn.Module):
        params = [p for p in net.parameters() if p.requires_grad]
    else:
        params = net.params
    norm = grad_norm(params)
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm
    return float(norm)


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train_epoch(net, batch_size, num_steps, loss, lr, device):
    state = None
    total, count, norms, clipped_norms, detached = 0.0, 0, [], [], []
    for X, Y in seq_data_iter_sequential(corpus, batch_size, num_steps):
        if state is None:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        else:
            for s in state:
                s.detach_()  # keep the state, cut the graph to the previous batch
            detached.append(not any(s.requires_grad for s in state))
        y = Y.T.reshape(-1)
        y_hat, state = net(X, state)
        l = loss(y_hat, y.long()).mean()
        l.backward()
        norms.append(grad_clipping(net, 1))
        clipped_norms.append(float(grad_norm(net.params)))
        sgd(net.params, lr, batch_size=1)  # the loss is already a mean
        total += float(l) * y.numel()
        count += y.numel()
    return math.exp(total / count), norms, clipped_norms, detached


device = torch.device('cpu')
num_hiddens, batch_size, num_steps = 64, 8, 16
net = RNNModelScratch(len(vocab), num_hiddens, device, get_params, init_rnn_state, rnn)

X = torch.arange(10).reshape((2, 5))
one_hot = F.one_hot(torch.tensor([0, 2]), len(vocab))
Y, new_state = net(X, net.begin_state(X.shape[0], device))
untrained = predict('the ', 10, net, vocab, device)

loss = nn.CrossEntropyLoss()
perplexities, norms, clipped_norms, detached = [], [], [], []
for epoch in range(40):
    ppl, epoch_norms, epoch_clipped, epoch_detached = train_epoch(net, batch_size, num_steps, loss, 1.0, device)
    perplexities.append(ppl)
    norms.extend(epoch_norms)
    clipped_norms.extend(epoch_clipped)
    detached.extend(epoch_detached)
    if (epoch + 1) % 10 == 0:
        print(f'epoch {epoch + 1}, perplexity {ppl:.1f}')
trained = predict('the time ', 20, net, vocab, device)

RESULT = {
    "vocab_size": len(vocab), "one_hot": one_hot, "output_shape": tuple(Y.shape),
    "state_shape": tuple(new_state[0].shape), "untrained": untrained, "trained": trained,
    "perplexities": perplexities, "max_norm": max(norms), "clipped": sum(n > 1 for n in norms),
    "max_clipped_norm": max(clipped_norms), "detached": (len(detached), all(detached)),
}
