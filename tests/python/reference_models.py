#!/usr/bin/env python3
"""Reference PyTorch definitions of iat's models, written from the papers, with the module names of the
common codebases (PreAct ResNet as in fast-adversarial / robust-overfitting, WideResNet as in TRADES /
MART), used by tests/test_models.cpp to check that state-dict files travel between C++ and Python.

Usage:
  reference_models.py count
      prints the parameter counts of PreAct ResNet-18, WRN-34-10, WRN-28-10 (CIFAR-10) and SmallCNN.
  reference_models.py JOB [JOB ...]
      each JOB is one argument of `key=value` pairs separated by ';':
        mode=load    load the C++ state dict `sd` with strict=True, run `input`, torch.save({'logits': ...}) to `out`
        mode=export  build a model with random weights and BN statistics (seed `seed`), torch.save its
                     state_dict() to `sd`, run `input`, save {'logits': ...} to `out`
      model keys: arch=preact_resnet18|wide_resnet|small_cnn, classes, in_channels, act=relu|silu,
                  depth, widen, sub_block1=0|1 (wide_resnet), image_size, width, hidden (small_cnn).
The models run in eval mode; inputs are used as they are (no normalisation: the C++ models under test
use the identity normalisation).
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def act_fn(name):
    return {"relu": F.relu, "silu": F.silu}[name]


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.act = act
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x):
        skip = self.shortcut(x) if hasattr(self, "shortcut") else x
        h = self.conv1(self.act(self.bn1(x)))
        h = self.conv2(self.act(self.bn2(h)))
        return h + skip


class PreActResNet18(nn.Module):
    def __init__(self, classes=10, in_channels=3, act="relu"):
        super().__init__()
        self.act = act_fn(act)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        cin = 64
        for i, (width, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            blocks = []
            for b in range(2):
                blocks.append(PreActBlock(cin, width, stride if b == 0 else 1, self.act))
                cin = width
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        h = self.conv1(x)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        h = self.act(self.bn(h))
        return self.linear(F.adaptive_avg_pool2d(h, 1).flatten(1))


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.act = act
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.same = cin == cout
        self.convShortcut = None if self.same else nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        pre = self.act(self.bn1(x))
        h = self.act(self.bn2(self.conv1(pre)))
        h = self.conv2(h)
        return (x if self.same else self.convShortcut(pre)) + h


class WideStage(nn.Module):
    def __init__(self, n, cin, cout, stride, act):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=34, widen=10, classes=10, in_channels=3, act="relu", sub_block1=False):
        super().__init__()
        assert (depth - 4) % 6 == 0
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.act = act_fn(act)
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(n, ch[0], ch[1], 1, self.act)
        if sub_block1:
            self.sub_block1 = WideStage(n, ch[0], ch[1], 1, self.act)
        self.block2 = WideStage(n, ch[1], ch[2], 2, self.act)
        self.block3 = WideStage(n, ch[2], ch[3], 2, self.act)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], classes)

    def forward(self, x):
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        h = self.act(self.bn1(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class SmallCNN(nn.Module):
    def __init__(self, classes=10, in_channels=1, image_size=28, width=32, hidden=128, act="relu"):
        super().__init__()
        self.act = act_fn(act)
        side = image_size // 2 // 2
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * side * side, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        h = F.max_pool2d(self.act(self.conv1(x)), 2)
        h = F.max_pool2d(self.act(self.conv2(h)), 2)
        return self.fc2(self.act(self.fc1(h.flatten(1))))


def build(job):
    arch = job["arch"]
    classes = int(job.get("classes", 10))
    act = job.get("act", "relu")
    if arch == "preact_resnet18":
        return PreActResNet18(classes, int(job.get("in_channels", 3)), act)
    if arch == "wide_resnet":
        return WideResNet(int(job["depth"]), int(job["widen"]), classes, int(job.get("in_channels", 3)), act,
                          job.get("sub_block1", "0") == "1")
    if arch == "small_cnn":
        return SmallCNN(classes, int(job.get("in_channels", 1)), int(job.get("image_size", 28)),
                        int(job.get("width", 32)), int(job.get("hidden", 128)), act)
    raise SystemExit("unknown arch " + arch)


def count(model):
    return sum(p.numel() for p in model.parameters())


def randomise(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(seed)


def run(job):
    model = build(job)
    if job["mode"] == "load":
        # weights_only: what torch.load does by default from PyTorch 2.6 on (and 1.13 accepts), so iat's files
        # must load without TorchScript globals.
        model.load_state_dict(torch.load(job["sd"], weights_only=True), strict=True)
    elif job["mode"] == "export":
        randomise(model, int(job.get("seed", 1)))
        torch.save(model.state_dict(), job["sd"])
    else:
        raise SystemExit("unknown mode " + job["mode"])
    model.eval()
    x = torch.load(job["input"], weights_only=True)
    with torch.no_grad():
        logits = model(x)
    torch.save({"logits": logits}, job["out"])


def main(argv):
    if argv == ["count"]:
        print("preact_resnet18", count(PreActResNet18()))
        print("wrn-34-10", count(WideResNet(34, 10)))
        print("wrn-28-10", count(WideResNet(28, 10)))
        print("wrn-34-10 with sub_block1", count(WideResNet(34, 10, sub_block1=True)))
        print("small_cnn", count(SmallCNN()))
        return
    if not argv:
        raise SystemExit(__doc__)
    for arg in argv:
        run(dict(kv.split("=", 1) for kv in arg.split(";") if kv))


if __name__ == "__main__":
    main(sys.argv[1:])
