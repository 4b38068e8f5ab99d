#!/usr/bin/env python3
"""PyTorch reference for `dl textgen`'s accuracy: the original program's character model,
trained with the same corpus split, windows, optimiser and schedule, reporting the same
figures (`train_accuracy_last100`: mean training-batch accuracy, dropout on, over the last
100 steps; `valid_bits_per_char` and `valid_accuracy` on the held-out 5 %, dropout off).

Not run by CI. Needs torch in a virtual environment outside the repository:

    ~/venv-bench/bin/python bench/textgen_reference.py --text ../shared/data/text/book_EN_grimms_fairy_tails.txt

Model: embedding(V -> 64) -> nn.LSTM(64, 128, 2 layers, dropout 1 - keep_prob between the
layers) -> Linear(128 -> V); RMSprop(lr 2e-3; PyTorch's alpha 0.99, eps 1e-8) with x0.96
every 5000 steps, gradient-norm clipping at 5, batch 64 windows of 30 characters.
"""

import argparse
import json
import math
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True)
    p.add_argument("--steps", type=int, default=33600)
    p.add_argument("--keep-prob", type=float, default=0.8)
    p.add_argument("--seq-length", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log-every", type=int, default=1000)
    args = p.parse_args()

    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    text = open(args.text, encoding="utf-8").read()
    text = text[1:] if text.startswith("\ufeff") else text
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.long)
    valid_len = max(2, math.ceil(len(tokens) * 0.05))
    train, valid = tokens[:-valid_len], tokens[-valid_len:]

    class CharLstm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(len(vocab), 64)
            self.lstm = torch.nn.LSTM(64, 128, num_layers=2, dropout=1 - args.keep_prob, batch_first=True)
            self.head = torch.nn.Linear(128, len(vocab))

        def forward(self, x):
            return self.head(self.lstm(self.embedding(x))[0])

    model = CharLstm()
    opt = torch.optim.RMSprop(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5000, gamma=0.96)
    loss_fn = torch.nn.CrossEntropyLoss()
    t = args.seq_length
    generator = torch.Generator().manual_seed(args.seed)
    offsets = torch.arange(t)
    accuracies = []
    start = time.time()
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, len(train) - t, (args.batch_size,), generator=generator)
        idx = starts[:, None] + offsets[None, :]
        x, y = train[idx], train[idx + 1]
        model.train()
        logits = model(x)
        loss = loss_fn(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        accuracies.append((logits.argmax(-1) == y).float().mean().item())
        if step % args.log_every == 0:
            recent = sum(accuracies[-100:]) / len(accuracies[-100:])
            print(f"step {step}: loss {loss.item():.3f}, train accuracy (last 100) {recent:.4f}, {time.time() - start:.0f} s", flush=True)

    model.eval()
    nll, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(valid) - 1, t):
            n = min(t, len(valid) - 1 - s)
            x, y = valid[s : s + n][None], valid[s + 1 : s + n + 1][None]
            logits = model(x)
            nll += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
            correct += (logits[0].argmax(-1) == y[0]).sum().item()
            count += n
    print(
        json.dumps(
            {
                "steps": args.steps,
                "keep_prob": args.keep_prob,
                "train_accuracy_last100": round(sum(accuracies[-100:]) / len(accuracies[-100:]), 4),
                "valid_bits_per_char": round(nll / count / math.log(2), 4),
                "valid_accuracy": round(correct / count, 4),
                "wall_s": round(time.time() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
