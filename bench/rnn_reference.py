#!/usr/bin/env python3
"""PyTorch reference for `dl rnn`'s accuracy: the original LSTM / peephole LSTM trained on
binary palindromes with `dl rnn`'s defaults and tested the same way, one JSON line per seed
and a summary line.

Not run by CI. Needs torch in a virtual environment outside the repository:

    ~/venv-bench/bin/python bench/rnn_reference.py --model peephole --seeds 42,43,44

Training: fresh batches of 256 palindromes each step, Adam (lr 1e-4), NLL, clip_grad_norm_
at 10, at most --steps steps, stopping early once the training batch has been classified
perfectly for --early-stop consecutive steps (as `dl rnn`). Test: --test-batches fresh batches
of 256 after training. The model is bench/reference.py's `original_lstm`.
"""

import argparse
import json
import random
import statistics
import time

from reference import original_lstm


def palindrome(rng, length):
    """ceil(L/2) random digits 0-8 in binary without leading zeros, concatenated, reversed
    with probability 1/2, mirrored (the middle bit shared for odd L)."""
    bits = []
    for _ in range((length + 1) // 2):
        bits += [int(b) for b in format(rng.randrange(9), "b")]
    if rng.random() < 0.5:
        bits.reverse()
    keep = len(bits) if length % 2 == 0 else len(bits) - 1
    return bits + bits[:keep][::-1]


def batch(torch, rng, length, size):
    digits = (length + 1) // 2
    total = max(4 * length + 2, 8 * digits if length % 2 == 0 else 8 * digits - 1)
    xs, ys = [], []
    for _ in range(size):
        symbols = [0] * total
        bits = palindrome(rng, length)
        symbols[total - len(bits):] = [b + 1 for b in bits]
        xs.append(symbols[:-1])
        ys.append(symbols[-1] - 1)
    return torch.tensor(xs), torch.tensor(ys)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lstm", choices=["lstm", "peephole"])
    p.add_argument("--length", type=int, default=10)
    p.add_argument("--input-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--early-stop", type=int, default=200)
    p.add_argument("--test-batches", type=int, default=10)
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    accuracies = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        rng = random.Random(seed)
        model = original_lstm(torch, args.input_dim, args.hidden, max(args.length, 2), args.model == "peephole")
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        start, perfect, steps = time.time(), 0, 0
        for steps in range(1, args.steps + 1):
            x, y = batch(torch, rng, args.length, args.batch_size)
            opt.zero_grad(set_to_none=True)
            log_probs = model(x)
            nn.functional.nll_loss(log_probs, y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            opt.step()
            perfect = perfect + 1 if bool((log_probs.argmax(dim=1) == y).all()) else 0
            if args.early_stop and perfect >= args.early_stop:
                break
        correct = 0
        with torch.no_grad():
            for _ in range(args.test_batches):
                x, y = batch(torch, rng, args.length, args.batch_size)
                correct += (model(x).argmax(dim=1) == y).sum().item()
        accuracy = correct / (args.test_batches * args.batch_size)
        accuracies.append(accuracy)
        print(json.dumps({"seed": seed, "steps": steps, "test_accuracy": accuracy,
                          "wrong": args.test_batches * args.batch_size - correct,
                          "wall_s": round(time.time() - start, 1)}), flush=True)
    print(json.dumps({"model": args.model, "length": args.length,
                      "test_accuracy_mean": statistics.mean(accuracies),
                      "test_accuracy_std": statistics.pstdev(accuracies)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
