#!/usr/bin/env python3
"""A PGD-AT training step (PGD-10, ε = 8/255, α = 2/255, SGD with Nesterov momentum) on PreAct ResNet-18
or WRN-34-10 with CIFAR-shaped batches, written directly in PyTorch: the Python peer of
bench_train_step_throughput's pgd-at rows (scripts/gpu_check.sh runs both on the same device).

    python benchmarks/train_step_python.py [--device cuda] [--model prn18|wrn-34-10] [--batch 128]
        [--steps 10] [--warmup 3] [--precision fp32|bf16|bf16-cl] [--compile] [--image-size 32]

--compile wraps the model in torch.compile (the attack and the step stay eager). Prints one JSON line
(median step time over the timed steps, images/s, peak GPU memory in MiB or -1 on the CPU); a failing
torch.compile prints {"error": ...} and exits 3, so a caller can record that it does not work there."""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
from pgd_step import pgd  # noqa: E402  (the same plain-PyTorch Madry PGD as the CPU benchmark)
from reference_models import PreActResNet18, WideResNet  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", choices=("prn18", "wrn-34-10"), default="prn18")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=("fp32", "bf16", "bf16-cl"), default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = PreActResNet18() if a.model == "prn18" else WideResNet(34, 10)
    net = net.to(device)
    x = torch.rand(a.batch, 3, a.image_size, a.image_size, device=device)
    y = torch.randint(0, 10, (a.batch,), device=device)
    if a.precision == "bf16-cl":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    model = torch.compile(net) if a.compile else net
    autocast = a.precision != "fp32"

    def forward(inputs):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(inputs).float()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    try:
        for i in range(a.warmup + a.steps):
            sync()
            t0 = time.perf_counter()
            x_adv = pgd(ForwardModule(forward, net), x, y, 8 / 255, 2 / 255, 10)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(forward(x_adv), y)
            loss.backward()
            opt.step()
            sync()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
    except Exception as e:  # torch.compile can fail on a machine without a working compiler tool chain
        if not a.compile:
            raise
        print(json.dumps({"model": a.model, "precision": a.precision, "compile": True, "error": str(e)[:500]}))
        sys.exit(3)
    times.sort()
    step_ms = 1000 * times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else -1
    print(json.dumps({"model": a.model, "method": "pgd-at", "precision": a.precision, "compile": a.compile,
                      "device": str(device), "batch": a.batch, "steps": a.steps, "step_ms": round(step_ms, 3),
                      "images_per_second": round(1000 * a.batch / step_ms, 1), "peak_memory_mib": round(peak, 1),
                      "torch": torch.__version__}))


class ForwardModule:
    """What pgd() needs of a model (a call and the train/eval switch), with the autocast forward."""

    def __init__(self, forward, net):
        self.forward, self.net = forward, net

    @property
    def training(self):
        return self.net.training

    def train(self, mode=True):
        self.net.train(mode)

    def eval(self):
        self.net.eval()

    def __call__(self, inputs):
        return self.forward(inputs)


if __name__ == "__main__":
    main()
