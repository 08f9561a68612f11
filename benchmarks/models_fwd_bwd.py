#!/usr/bin/env python3
"""The Python side of bench_models_fwd_bwd: one forward+backward pass (train mode, CE loss) of the reference
definitions in tests/python/reference_models.py, SmallCNN at batch 128 and PreAct ResNet-18 at batch 32.
  models_fwd_bwd.py [--reps 5] [--threads 1]"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import reference_models as ref  # noqa: E402


def median_ms(net, x, y, reps):
    net.train()
    ms = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        if r > 0:
            ms.append((time.perf_counter() - t0) * 1e3)
    return sorted(ms)[len(ms) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name, net, x in (("small_cnn", ref.SmallCNN(), torch.rand(128, 1, 28, 28)),
                         ("preact_resnet18", ref.PreActResNet18(), torch.rand(32, 3, 32, 32))):
        y = torch.randint(0, 10, (x.shape[0],))
        print(json.dumps({"impl": "python", "model": name, "batch": x.shape[0], "threads": torch.get_num_threads(),
                          "ms": round(median_ms(net, x, y, a.reps), 2)}))


if __name__ == "__main__":
    main()
