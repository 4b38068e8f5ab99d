#!/usr/bin/env python3
"""PyTorch reference for `dl mlp`'s accuracy: the write-up's PyTorch MLP, trained on the same
CIFAR-10 binary files and reporting the same figures, one line of JSON per seed.

Not run by CI. Needs torch and numpy in a virtual environment outside the repository:

    ~/venv-bench/bin/python bench/mlp_reference.py --data target/data/cifar10-dev --seeds 42,1,2

As the original program: pixels as floats 0..255 minus the training set's mean image, flattened
channel-major; per hidden layer Linear -> ReLU -> BatchNorm1d (PyTorch's default
initialisation, eps 1e-5, momentum 0.1); plain SGD, cross-entropy, batch 200; batches walk the
training set in file order, reshuffled after each epoch (the original's DataSet); evaluation on
the whole test set every --eval-every steps with the BatchNorm running statistics (eval mode).
The model is bench/reference.py's `torch_mlp`.
"""

import argparse
import json
import os
import time

from reference import torch_mlp


def load(folder, names):
    import numpy as np

    records = [np.fromfile(os.path.join(folder, n), dtype=np.uint8).reshape(-1, 3073) for n in names]
    records = np.concatenate(records)
    return records[:, 1:].astype(np.float32), records[:, 0].astype(np.int64)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder holding cifar-10-batches-bin (or that folder)")
    p.add_argument("--hidden", default="200,200")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=3200)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seeds", default="42")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    folder = args.data
    if os.path.isdir(os.path.join(folder, "cifar-10-batches-bin")):
        folder = os.path.join(folder, "cifar-10-batches-bin")
    x_train, y_train = load(folder, [f"data_batch_{i}.bin" for i in range(1, 6)])
    x_test, y_test = load(folder, ["test_batch.bin"])
    mean = x_train.mean(axis=0)
    x_train = torch.from_numpy(x_train - mean)
    x_test = torch.from_numpy(x_test - mean)
    y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)
    hidden = [int(h) for h in args.hidden.split(",") if h]

    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = torch_mlp(torch, hidden, "relu", "batch")
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        loss_fn = torch.nn.CrossEntropyLoss()

        def evaluate():
            model.eval()
            with torch.no_grad():
                correct = (model(x_test).argmax(dim=1) == y_test).sum().item()
            model.train()
            return correct / len(y_test)

        order, cursor = np.arange(len(y_train)), 0
        curve, start = [], time.time()
        for step in range(1, args.steps + 1):
            if cursor + args.batch_size > len(order):
                rng.shuffle(order)
                cursor = 0
            idx = torch.from_numpy(order[cursor : cursor + args.batch_size])
            cursor += args.batch_size
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
            if step % args.eval_every == 0 or step == args.steps:
                curve.append((step, evaluate()))
        best_step, best = max(curve, key=lambda c: c[1])
        print(json.dumps({"seed": seed, "steps": args.steps, "test_accuracy": curve[-1][1],
                          "best_test_accuracy": best, "best_step": best_step,
                          "wall_s": round(time.time() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
