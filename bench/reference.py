#!/usr/bin/env python3
"""PyTorch and NumPy reference timings for `dl bench`, measured in the same run.

Times the training step alone (forward, backward, update) of the same shapes as
`dl bench mlp`, on synthetic batches, after a warm-up, and reports the median step time.
With `--dl PATH` it also runs `PATH bench mlp --json` in between, rounds interleaved so that
machine drift hits every side alike, and prints the ratios.

Not run by CI. Needs a virtual environment outside the repository, e.g.:

    python3 -m venv ~/venv-bench && ~/venv-bench/bin/pip install torch numpy
    ~/venv-bench/bin/python bench/reference.py mlp --dl target/release/dl

The NumPy step follows the original practical's NumPy MLP: float32 data, float64 weights
(NumPy's `random.normal` default), so its products run in float64 as the original's did.
`--numpy-dtype float32` times an all-float32 NumPy step instead.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def median_ms(step, steps, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def torch_mlp(torch, hidden, activation, norm):
    """The write-up's PyTorch MLP on CIFAR-10's 3072 inputs: per hidden layer Linear ->
    activation -> norm (none, batch or layer), then Linear to the 10 classes."""
    widths = [3072] + hidden + [10]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ELU() if activation == "elu" else torch.nn.ReLU())
            if norm == "batch":
                layers.append(torch.nn.BatchNorm1d(widths[i + 1]))
            elif norm == "layer":
                layers.append(torch.nn.LayerNorm(widths[i + 1]))
    return torch.nn.Sequential(*layers)


def torch_mlp_step(args):
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = torch_mlp(torch, args.hidden, args.activation, args.norm)
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3072) * 60.0
    y = torch.randint(0, 10, (args.batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def torch_cnn_step(args):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    class PreActBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.bn = nn.BatchNorm2d(c)
            self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)

        def forward(self, x):
            return x + self.conv(torch.relu(self.bn(x)))

    def pool():
        return nn.MaxPool2d(3, stride=2, padding=1)

    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), PreActBlock(64),
        nn.Conv2d(64, 128, 1), pool(), PreActBlock(128), PreActBlock(128),
        nn.Conv2d(128, 256, 1), pool(), PreActBlock(256), PreActBlock(256),
        nn.Conv2d(256, 512, 1), pool(), PreActBlock(512), PreActBlock(512),
        pool(), PreActBlock(512), PreActBlock(512),
        pool(), nn.BatchNorm2d(512), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, 32, 32) * 60.0
    y = torch.randint(0, 10, (args.batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def palindrome_batch(torch, args):
    """A batch shaped like `dl bench rnn --task palindrome`: 4L+1 tokens in {0, 1, 2}."""
    t = 4 * args.length + 1
    x = torch.randint(0, 3, (args.batch_size, t))
    y = torch.randint(0, 2, (args.batch_size,))
    return x, y


def original_lstm(torch, d, h, classes, peephole):
    """The original practical's LSTM / peephole LSTM: embedding(3 -> d), a parameter per gate
    and matrix (stored [in, out], `kaiming_normal_` with linear gain as the original calls it),
    a Python loop over the steps, log-softmax of the last state's projection."""
    from torch import nn

    def weight(rows, cols):
        w = torch.empty(rows, cols)
        nn.init.kaiming_normal_(w, nonlinearity="linear")
        return nn.Parameter(w)

    class Lstm(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(3, d)
            gates = "ifo" if peephole else "gifo"
            self.wx = nn.ParameterDict({g: weight(d, h) for g in gates + ("c" if peephole else "")})
            self.wh = nn.ParameterDict({g: weight(h, h) for g in gates})
            self.b = nn.ParameterDict({g: nn.Parameter(torch.zeros(h)) for g in self.wx})
            self.wp = weight(h, classes)
            self.bp = nn.Parameter(torch.zeros(classes))

        def forward(self, x):
            e = self.embedding(x)
            hs = torch.zeros(x.shape[0], h)
            c = torch.zeros(x.shape[0], h)
            for t in range(x.shape[1]):
                xt = e[:, t]
                if peephole:
                    i = torch.sigmoid(xt @ self.wx["i"] + c @ self.wh["i"] + self.b["i"])
                    f = torch.sigmoid(xt @ self.wx["f"] + c @ self.wh["f"] + self.b["f"])
                    o = torch.sigmoid(xt @ self.wx["o"] + c @ self.wh["o"] + self.b["o"])
                    cand = torch.sigmoid(xt @ self.wx["c"] + self.b["c"])
                    c = cand * i + c * f
                else:
                    g = torch.tanh(xt @ self.wx["g"] + hs @ self.wh["g"] + self.b["g"])
                    i = torch.sigmoid(xt @ self.wx["i"] + hs @ self.wh["i"] + self.b["i"])
                    f = torch.sigmoid(xt @ self.wx["f"] + hs @ self.wh["f"] + self.b["f"])
                    o = torch.sigmoid(xt @ self.wx["o"] + hs @ self.wh["o"] + self.b["o"])
                    c = g * i + c * f
                hs = torch.tanh(c) * o
            return torch.log_softmax(hs @ self.wp + self.bp, dim=1)

    return Lstm()


def torch_rnn_step(args):
    """The original LSTM / peephole LSTM's step: NLL, Adam, clip_grad_norm_(10)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = original_lstm(torch, args.input_dim, args.hidden, max(args.length, 2), args.rnn_model == "peephole")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x, y = palindrome_batch(torch, args)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.nll_loss(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        opt.step()

    return step


def torch_textgen_step(args):
    """The original text model: embedding → nn.LSTM(2 layers, dropout) → linear; RMSprop,
    clip_grad_norm_(5), batch 64 × 30, 87 characters."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    vocab, seq, batch = 87, 30, args.batch_size

    class TextModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, 64)
            self.lstm = nn.LSTM(64, 128, num_layers=2, dropout=0.2, batch_first=True)
            self.head = nn.Linear(128, vocab)

        def forward(self, x):
            out, _ = self.lstm(self.embedding(x))
            return self.head(out)

    model = TextModel()
    opt = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
        opt.step()

    return step


def numpy_mlp_step(args):
    import numpy as np

    rng = np.random.default_rng(0)
    wdtype = np.float64 if args.numpy_dtype == "float64" else np.float32
    widths = [3072] + args.hidden + [10]
    ws = [rng.normal(0, 1e-4, (widths[i + 1], widths[i])).astype(wdtype) for i in range(len(widths) - 1)]
    bs = [np.zeros(widths[i + 1], dtype=wdtype) for i in range(len(widths) - 1)]
    x = (rng.standard_normal((args.batch_size, 3072)) * 60.0).astype(np.float32)
    labels = rng.integers(0, 10, args.batch_size)
    onehot = np.eye(10, dtype=np.float32)[labels]
    elu = args.activation == "elu"

    def step():
        acts, pre = [x], []
        h = x
        for i, (w, b) in enumerate(zip(ws, bs)):
            z = h @ w.T + b
            pre.append(z)
            if i < len(ws) - 1:
                h = np.where(z > 0, z, np.exp(z) - 1) if elu else np.maximum(z, 0)
                acts.append(h)
            else:
                h = z
        z = h - h.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        d = (p - onehot) / args.batch_size
        for i in reversed(range(len(ws))):
            gw = d.T @ acts[i]
            gb = d.sum(axis=0)
            if i > 0:
                d = d @ ws[i]
                a = acts[i]
                d = d * (np.where(pre[i - 1] > 0, 1.0, a + 1.0) if elu else (pre[i - 1] > 0))
            ws[i] -= args.lr * gw
            bs[i] -= args.lr * gb

    return step


def dl_cmd(args):
    if args.model == "cnn":
        cmd = [args.dl, "bench", "cnn", "--engine", args.engine, "--lr", str(args.lr)]
    elif args.model == "rnn":
        cmd = [args.dl, "bench", "rnn", "--engine", args.engine, "--model", args.rnn_model, "--length", str(args.length),
               "--input-dim", str(args.input_dim), "--hidden", str(args.hidden), "--lr", str(args.lr)]
    elif args.model == "textgen":
        cmd = [args.dl, "bench", "textgen", "--engine", args.engine, "--lr", str(args.lr)]
    else:
        cmd = [
            args.dl, "bench", "mlp", "--engine", args.engine,
            "--hidden", ",".join(map(str, args.hidden)), "--activation", args.activation,
            "--norm", args.norm, "--optimizer", args.optimizer, "--lr", str(args.lr),
        ]
    return cmd + ["--batch-size", str(args.batch_size), "--steps", str(args.steps),
                  "--warmup", str(args.warmup), "--json"]


def side_cmd(args, side):
    """This script, timing one side only, in a process of its own: thread pools that spin
    after their last parallel region (OpenMP, OpenBLAS) then cannot slow the next side."""
    cmd = [sys.executable, __file__, args.model, "--only", side,
           "--hidden", args.hidden_arg, "--activation", args.activation,
           "--norm", args.norm, "--optimizer", args.optimizer, "--lr", str(args.lr),
           "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--numpy-dtype", args.numpy_dtype, "--rnn-model", args.rnn_model, "--length", str(args.length),
           "--input-dim", str(args.input_dim)]
    return cmd


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["step_ms_median"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["mlp", "cnn", "rnn", "textgen"])
    parser.add_argument("--hidden", default="100", help="mlp: hidden widths, comma-separated; rnn: units")
    parser.add_argument("--rnn-model", default="lstm", choices=["lstm", "peephole"])
    parser.add_argument("--length", type=int, default=10, help="rnn: palindrome length L")
    parser.add_argument("--input-dim", type=int, default=64, help="rnn: embedding width")
    parser.add_argument("--activation", default="elu", choices=["elu", "relu"])
    parser.add_argument("--norm", default="none", choices=["none", "batch", "layer"])
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--engine", default="manual", choices=["manual", "burn"], help="dl's engine")
    parser.add_argument("--lr", type=float, help="default: 1e-3 (mlp), 1e-4 (cnn)")
    parser.add_argument("--batch-size", type=int, help="default: 200 (mlp), 32 (cnn)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians of rounds are reported")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--numpy-dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--dl", help="path to the dl binary, to time `dl bench` in the same run")
    parser.add_argument("--only", choices=["pytorch", "numpy"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.hidden_arg = args.hidden
    if args.model == "mlp":
        args.hidden = [int(h) for h in args.hidden_arg.split(",") if h]
    else:
        # The recurrent models' units: 256 for the classifiers, 128 for the text model.
        default_units = {"rnn": 256, "textgen": 128, "cnn": 0}[args.model]
        args.hidden = default_units if args.hidden_arg == "100" else int(args.hidden_arg)
    default_lr = {"mlp": 1e-3, "cnn": 1e-4, "rnn": 1e-4, "textgen": 2e-3}[args.model]
    default_batch = {"mlp": 200, "cnn": 32, "rnn": 256, "textgen": 64}[args.model]
    args.lr = args.lr if args.lr is not None else default_lr
    args.batch_size = args.batch_size or default_batch

    if args.only:
        torch_step = {"mlp": torch_mlp_step, "cnn": torch_cnn_step, "rnn": torch_rnn_step,
                      "textgen": torch_textgen_step}[args.model]
        step = {"pytorch": torch_step, "numpy": numpy_mlp_step}[args.only](args)
        print(json.dumps({"side": args.only, "step_ms_median": median_ms(step, args.steps, args.warmup)}))
        return 0
    sides = {"pytorch": side_cmd(args, "pytorch")}
    if not args.no_numpy and args.norm == "none" and args.model == "mlp" and args.optimizer == "sgd":
        sides["numpy"] = side_cmd(args, "numpy")
    if args.dl:
        sides["dl"] = dl_cmd(args)
    results = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, cmd in sides.items():
            results[name].append(run_json(cmd))
    report = {"model": args.model, "batch_size": args.batch_size, "rounds": args.rounds}
    if args.model == "mlp":
        report.update(engine=args.engine, hidden=args.hidden, activation=args.activation, norm=args.norm,
                      optimizer=args.optimizer)
    for name, ms in results.items():
        m = statistics.median(ms)
        report[f"{name}_step_ms"] = round(m, 4)
        report[f"{name}_examples_per_sec"] = round(args.batch_size / (m / 1e3), 1)
    if args.dl:
        for name in sides:
            if name == "dl":
                continue
            report[f"dl_vs_{name}"] = round(statistics.median(results[name]) / statistics.median(results["dl"]), 3)
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
