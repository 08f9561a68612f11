#!/usr/bin/env python3
"""Builds the inputs of the AutoAttack agreement check: a small TorchScript CNN trained briefly on
Fashion-MNIST (with a little FGSM-RS adversarial training, so that robust accuracy at the check's epsilon
is neither 0 nor 100 %), and a file of test points in the format iat-eval reads.

    python3 make_model.py --out-dir /tmp/aa_check --n 300

Writes <out-dir>/model.pt (torch.jit.save; input float [N,1,28,28] in [0,1], output logits [N,10]) and
<out-dir>/points.pt (torch.save({'x': float [N,1,28,28] in [0,1], 'y': int64 [N]}): the first N test images).
Fashion-MNIST is read from the IDX files (gzip + numpy), by default from Debian's dataset-fashion-mnist
package (/usr/share/datasets/fashion-mnist).
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(root, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(x.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(y.copy()).long()
    return x, y


class SmallCNN(nn.Module):
    """conv 3x3/2 (8) - conv 3x3/2 (16) - fc 64 - fc 10: small enough for a full AutoAttack run on 2 cores."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--n", type=int, default=300, help="test points to write")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-eps", type=float, default=0.1, help="FGSM-RS training radius (0: plain training)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    x_train, y_train = load_split(args.data_dir, "train")
    x_test, y_test = load_split(args.data_dir, "test")

    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    bs = 128
    t0 = time.time()
    for epoch in range(args.epochs):
        perm = torch.randperm(x_train.shape[0])
        for i in range(0, x_train.shape[0], bs):
            idx = perm[i:i + bs]
            xb, yb = x_train[idx], y_train[idx]
            if args.train_eps > 0:  # FGSM-RS (Wong et al. 2020): random start, step 1.25 eps
                eps = args.train_eps
                delta = (torch.rand_like(xb) * 2 - 1) * eps
                delta.requires_grad_(True)
                loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
                g, = torch.autograd.grad(loss, [delta])
                delta = (delta + 1.25 * eps * g.sign()).clamp(-eps, eps).detach()
                xb = (xb + delta).clamp(0, 1)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_test[:2000]).argmax(1) == y_test[:2000]).float().mean().item()
    print(f"trained {args.epochs} epoch(s) in {time.time() - t0:.1f} s; clean accuracy on 2000 test images {acc:.4f}")

    scripted = torch.jit.script(model)
    torch.jit.save(scripted, os.path.join(args.out_dir, "model.pt"))
    torch.save({"x": x_test[:args.n].clone(), "y": y_test[:args.n].clone()}, os.path.join(args.out_dir, "points.pt"))
    print(f"wrote {args.out_dir}/model.pt and {args.out_dir}/points.pt ({args.n} points)")


if __name__ == "__main__":
    main()
