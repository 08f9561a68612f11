#!/usr/bin/env python3
"""The Python side of the PGD-10 benchmark: the same CNN, attack and training step as pgd_step.cpp,
either written directly with torch (--impl python: no attack library, as a PyTorch user would write
Madry's PGD) or with torchattacks' PGD (--impl torchattacks: the same ε, α, steps and random start).

    python benchmarks/pgd_step.py [--impl python|torchattacks] [--batch 128] [--reps 5] [--threads 1]
Prints one JSON line with medians over reps (the first repetition warms up and is dropped)."""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BenchCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.fc2(F.relu(self.fc1(h.flatten(1))))


def pgd(model, x, y, eps, alpha, steps):
    was_training = model.training
    model.eval()
    delta = torch.empty_like(x).uniform_(-eps, eps)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    model.train(was_training)
    return x_adv.detach()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--impl", choices=("python", "torchattacks"), default="python")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = BenchCNN()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(a.batch, 1, 28, 28)
    y = torch.randint(0, 10, (a.batch,))
    if a.impl == "torchattacks":
        import torchattacks

        # torchattacks switches the model to eval mode for the attack and restores it, as pgd() does.
        ta = torchattacks.PGD(net, eps=0.1, alpha=0.01, steps=10, random_start=True)
        run_attack = lambda: ta(x, y)
    else:
        run_attack = lambda: pgd(net, x, y, 0.1, 0.01, 10)
    attack, step = [], []
    for r in range(a.reps + 1):
        net.train()
        t0 = time.perf_counter()
        x_adv = run_attack()
        t1 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x_adv), y).backward()
        opt.step()
        t2 = time.perf_counter()
        if r:
            attack.append((t1 - t0) * 1e3)
            step.append((t2 - t0) * 1e3)
    med = lambda v: sorted(v)[len(v) // 2]
    print(json.dumps({"impl": a.impl, "batch": a.batch, "threads": torch.get_num_threads(), "reps": a.reps,
                      "attack_ms": round(med(attack), 2), "train_step_ms": round(med(step), 2),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
