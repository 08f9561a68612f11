#!/usr/bin/env python3
"""Fixtures for iat_eval_test.sh: tiny TorchScript models and points files in iat-eval's formats.

    python make_fixtures.py OUT_DIR

Writes OUT_DIR/model.pt (a small CNN for [N, 1, 8, 8] inputs, 10 classes, fixed random weights),
OUT_DIR/nan_model.pt (the same, but NaN logits for inputs whose first pixel is above 0.5: the even-numbered
points, whose first pixel is 1, also after any perturbation of at most 0.25), OUT_DIR/rgb_model.pt (expects
3 input channels, so it fails on the points), OUT_DIR/points.pt (32 points labelled with model.pt's own
predictions, so every point starts correct) and OUT_DIR/empty.pt (0 points)."""
import os
import sys

import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self, channels=1):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(h.flatten(1))


class NanWhenMarked(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        logits = self.inner(x)
        mask = (x[:, 0, 0, 0] > 0.5).unsqueeze(1)
        return torch.where(mask, torch.full_like(logits, float("nan")), logits)


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    net = Tiny().eval()
    x = torch.rand(32, 1, 8, 8)
    x[:, 0, 0, 0] = (torch.arange(32) % 2 == 0).float()  # the marker nan_model.pt reads
    with torch.no_grad():
        y = net(x).argmax(1)
    torch.jit.save(torch.jit.script(net), os.path.join(out, "model.pt"))
    torch.jit.save(torch.jit.script(NanWhenMarked(net).eval()), os.path.join(out, "nan_model.pt"))
    torch.jit.save(torch.jit.script(Tiny(3).eval()), os.path.join(out, "rgb_model.pt"))
    torch.save({"x": x, "y": y}, os.path.join(out, "points.pt"))
    torch.save({"x": x[:0], "y": y[:0]}, os.path.join(out, "empty.pt"))


if __name__ == "__main__":
    main()
