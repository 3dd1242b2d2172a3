# An LSTM, concise (D2L 10.1 / 9.6): nn.LSTM with a linear head in an nn.Module, the state
# kept between batches and detached, nn.CrossEntropyLoss, torch.optim.SGD and
# nn.utils.clip_grad_norm_, on a small repeated text; shows the perplexity falls.
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


class RNNModel(nn.Module):
    """A recurrent layer followed by a linear layer over the vocabulary."""
    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        if not self.rnn.bidirectional:
            self.num_directions = 1
            self.linear = nn.Linear(self.num_hiddens, self.vocab_size)
        else:
            self.num_directions = 2
            self.linear = nn.Linear(self.num_hiddens * 2, self.vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size)
        X = X.to(torch.float32)
        Y, state = self.rnn(X, state)
        # (num_steps * batch_size, num_hiddens) -> (num_steps * batch_size, vocab_size)
        output = self.linear(Y.reshape((-1, Y.shape[-1])))
        return output, state

    def begin_state(self, device, batch_size=1):
        shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)
        if not isinstance(self.rnn, nn.LSTM):
            return torch.zeros(shape, device=device)
        return (torch.zeros(shape, device=device), torch.zeros(shape, device=device))


def predict(prefix, num_preds, net, vocab, device):
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


def train_epoch(net, batch_size, num_steps, loss, updater, device):
    state = None
    total, count = 0.0, 0
    net.train()
    global max_clipped_norm, detached
    for X, Y in seq_data_iter_sequential(corpus, batch_size, num_steps):
        if state is None:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        elif isinstance(state, tuple):
            for s in state:
                s.detach_()  # keep the LSTM's (H, C), cut the graph to the previous batch
            detached = detached and not any(s.requires_grad for s in state)
        else:
            state.detach_()
        y = Y.T.reshape(-1)
        X, y = X.to(device), y.to(device)
        y_hat, state = net(X, state)
        l = loss(y_hat, y.long()).mean()
        updater.zero_grad()
        l.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1)
        norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in net.parameters()))
        max_clipped_norm = max(max_clipped_norm, float(norm))
        updater.step()
        total += float(l) * y.numel()
        count += y.numel()
    return math.exp(total / count)


device = torch.device('cpu')
num_inputs, num_hiddens, batch_size, num_steps = len(vocab), 64, 8, 16
lstm_layer = nn.LSTM(num_inputs, num_hiddens)
net = RNNModel(lstm_layer, vocab_size=len(vocab))
net = net.to(device)
param_shapes = [tuple(p.shape) for p in lstm_layer.parameters()]

state = net.begin_state(device, batch_size=2)
Y, (H, C) = net(torch.arange(10).reshape((2, 5)), state)
untrained = predict('the ', 10, net, vocab, device)

loss = nn.CrossEntropyLoss()
updater = torch.optim.SGD(net.parameters(), lr=4)
perplexities, max_clipped_norm, detached = [], 0.0, True
for epoch in range(30):
    perplexities.append(train_epoch(net, batch_size, num_steps, loss, updater, device))
    if (epoch + 1) % 10 == 0:
        print(f'epoch {epoch + 1}, perplexity {perplexities[-1]:.1f}')
trained = predict('the time ', 20, net, vocab, device)

RESULT = {
    "vocab_size": len(vocab), "param_shapes": param_shapes, "output_shape": tuple(Y.shape),
    "state_shapes": (tuple(H.shape), tuple(C.shape)), "untrained": untrained, "trained": trained,
    "perplexities": perplexities, "max_clipped_norm": max_clipped_norm, "detached": detached,
}
