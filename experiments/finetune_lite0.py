"""Issue 24 experiment: can EfficientNet-Lite0 fine-tuned on this machine's Food-101 thumbnails
reach >= 45 % 101-way top-1 on held-out 64 px photos?

Split: dishcam's own (`is_holdout(id, 0.2)`, FNV-1a of the file stem), so the numbers are on the
same 2,046 held-out photos as `dishcam eval classify --split holdout`.
Preparation: the serving path's, i.e. the lite head's `[heads.prepare]` (centred square, bicubic to
64 px, JPEG q75 4:2:0), then the encoder's own preprocessing (centre crop 0.875, bilinear to S,
(x - 127) / 128).

Stages (each resumable; everything is written under --out):
  probe   frozen encoder features at each --sizes, a linear head (the LP of LP-FT) per size
  finetune  all weights from the probe's head (LP-FT), BN statistics frozen, label smoothing,
          random-resized-crop + flip on the 64 px photo, EfficientNetV2-style progressive sizes
          (--stages sizes, equal epochs each); checkpoint every epoch, --resume continues

Usage (trainer env: ~/.cache/dishcam-train/bin/python):
  python experiments/finetune_lite0.py probe --sizes 96,128,160,224
  python experiments/finetune_lite0.py finetune --stages 96,112,128 --epochs 6
  python experiments/finetune_lite0.py finetune --stages 128 --epochs 4 --lr 1e-4 \
      --init runs/ft_lite0/ft_last.pt --tag ft2          # a second cycle from the first
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "trainer"))
from dishcam_trainer.models import build_image_tower  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "food101-64px" / "train"


def fnv1a(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def is_holdout(key: str, fraction: float = 0.2) -> bool:
    return fnv1a(key) % 10_000 < round(fraction * 10_000)


def prepare(img: Image.Image, size: int = 64, quality: int = 75) -> Image.Image:
    """The head's recorded preparation: centred square, bicubic to `size`, JPEG round trip."""
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    img = img.resize((size, size), Image.BICUBIC, box=box)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=2)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def load_split(root: Path):
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    train, val = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            item = (np.asarray(prepare(Image.open(f))), ci)
            (val if is_holdout(f.stem) else train).append(item)
    return classes, train, val


def to_pixels(arr: np.ndarray, size: int, box=None, flip=False) -> torch.Tensor:
    img = Image.fromarray(arr)
    if box is None:  # the encoder's eval preprocessing: centre crop 0.875 of the shorter side
        w, h = img.size
        s = 0.875 * min(w, h)
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    img = img.resize((size, size), Image.BILINEAR, box=box)
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)
    return (x - 127.0) / 128.0


def random_box(rng: random.Random, w: int, h: int, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)):
    area = w * h
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = math.sqrt(a * r), math.sqrt(a / r)
        if cw <= w and ch <= h:
            x, y = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (x, y, x + cw, y + ch)
    s = 0.875 * min(w, h)
    return ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)


def batches(items, size, bs, train=False, rng=None):
    order = list(range(len(items)))
    if train:
        rng.shuffle(order)
    for i in range(0, len(order), bs):
        idx = order[i : i + bs]
        xs, ys = [], []
        for j in idx:
            arr, y = items[j]
            if train:
                box = random_box(rng, arr.shape[1], arr.shape[0])
                xs.append(to_pixels(arr, size, box, flip=rng.random() < 0.5))
            else:
                xs.append(to_pixels(arr, size))
            ys.append(y)
        yield torch.stack(xs), torch.tensor(ys)


@torch.no_grad()
def features(tower, items, size, bs=64):
    tower.eval()
    out = [tower(x) for x, _ in batches(items, size, bs)]
    return torch.cat(out), torch.tensor([y for _, y in items])


def fit_linear(ftr, ytr, classes, epochs=60, lr=1e-2, wd=1e-4):
    """Multinomial logistic regression on frozen features (full batch, Adam)."""
    torch.manual_seed(0)
    head = nn.Linear(ftr.shape[1], classes)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=wd)
    z = (ftr - mu) / sd
    for _ in range(epochs * 10):
        opt.zero_grad()
        loss = F.cross_entropy(head(z), ytr, label_smoothing=0.1)
        loss.backward()
        opt.step()
    # Fold the standardisation into the layer so that it reads raw features.
    with torch.no_grad():
        w = head.weight / sd
        b = head.bias - (head.weight * mu / sd).sum(1)
        head.weight.copy_(w)
        head.bias.copy_(b)
    return head


def topk(logits, y, k):
    return (logits.topk(k, 1).indices == y[:, None]).any(1).float().mean().item()


def cmd_probe(args, classes, train, val):
    results = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        tower = build_image_tower("efficientnet_lite0", pretrained=True, image_size=size)
        t0 = time.time()
        ftr, ytr = features(tower, train, size)
        fva, yva = features(tower, val, size)
        fsec = time.time() - t0
        head = fit_linear(ftr, ytr, len(classes))
        with torch.no_grad():
            lv = head(fva)
        r = {"top1": topk(lv, yva, 1), "top5": topk(lv, yva, 5), "feature_seconds": round(fsec, 1)}
        # Encoder latency at this size: 1 thread, batch 1, median of 30 runs.
        torch.set_num_threads(1)
        x = torch.zeros(1, 3, size, size)
        tower.eval()
        ts = []
        with torch.no_grad():
            for _ in range(35):
                t = time.perf_counter()
                tower(x)
                ts.append(time.perf_counter() - t)
        torch.set_num_threads(args.threads)
        r["torch_1t_ms_median"] = round(1000 * sorted(ts[5:])[len(ts[5:]) // 2], 2)
        results[size] = r
        torch.save(head.state_dict(), args.out / f"probe_{size}.pt")
        print(json.dumps({"size": size, **r}), flush=True)
    (args.out / "probe.json").write_text(json.dumps(results, indent=1))


def set_bn_eval(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def cmd_finetune(args, classes, train, val):
    stages = [int(s) for s in args.stages.split(",")]
    tower = build_image_tower("efficientnet_lite0", pretrained=True, image_size=stages[-1])
    head = nn.Linear(tower.dim, len(classes))
    head.load_state_dict(torch.load(args.out / f"probe_{args.probe_size}.pt"))
    model = nn.Sequential(tower, nn.Dropout(args.dropout), head)
    if args.init:  # a second cycle: the weights of an earlier run, a fresh optimiser and schedule
        model.load_state_dict(torch.load(args.init)["model"])
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(
        [
            {"params": tower.parameters(), "lr": args.lr},
            {"params": head.parameters(), "lr": args.lr * args.head_lr_mult},
        ],
        weight_decay=args.weight_decay,
    )
    base = [g["lr"] for g in opt.param_groups]
    start_epoch, log = 0, []
    ckpt = args.out / f"{args.tag}_last.pt"
    if args.resume and ckpt.exists():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start_epoch, log = state["epoch"], state["log"]
        print(f"resumed after epoch {start_epoch}", flush=True)
    rng = random.Random(args.seed)
    for epoch in range(start_epoch, args.epochs):
        rng.seed(args.seed * 1000 + epoch)
        torch.manual_seed(args.seed * 1000 + epoch)
        size = stages[min(epoch * len(stages) // args.epochs, len(stages) - 1)]
        model.train()
        set_bn_eval(model)
        t0, seen, loss_sum = time.time(), 0, 0.0
        for step, (x, y) in enumerate(batches(train, size, args.batch_size, train=True, rng=rng)):
            it = epoch * steps_per_epoch + step
            warm = max(1, int(0.03 * total))
            f = (it + 1) / warm if it < warm else 0.5 * (1 + math.cos(math.pi * (it - warm) / (total - warm)))
            for g, b in zip(opt.param_groups, base, strict=True):
                g["lr"] = b * f
            loss = F.cross_entropy(model(x), y, label_smoothing=args.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
        train_sec = time.time() - t0
        model.eval()
        eval_size = args.eval_size or stages[-1]
        with torch.no_grad():
            lv = torch.cat([model(x) for x, _ in batches(val, eval_size, 64)])
        yva = torch.tensor([y for _, y in val])
        row = {
            "epoch": epoch + 1,
            "size": size,
            "loss": round(loss_sum / seen, 4),
            "val_top1": round(topk(lv, yva, 1), 4),
            "val_top5": round(topk(lv, yva, 5), 4),
            "eval_size": eval_size,
            "train_seconds": round(train_sec, 1),
        }
        log.append(row)
        print(json.dumps(row), flush=True)
        tmp = args.out / f"{args.tag}_last.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "log": log}, tmp)
        os.replace(tmp, ckpt)
        if args.stop_after and epoch + 1 - start_epoch >= args.stop_after:
            break
    (args.out / f"{args.tag}.json").write_text(
        json.dumps(
            {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "log": log}, indent=1
        )
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["probe", "finetune"])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("runs/ft_lite0"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="96,128,160,224")
    p.add_argument("--stages", default="96,112,128")
    p.add_argument("--probe-size", type=int, default=128)
    p.add_argument("--eval-size", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--head-lr-mult", type=float, default=3.0)
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", type=Path, help="start from this run's ft_last.pt weights (a new cycle)")
    p.add_argument("--tag", default="ft", help="prefix of this run's checkpoint and log files")
    p.add_argument("--stop-after", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    classes, train, val = load_split(args.data)
    print(
        f"{len(classes)} classes, {len(train)} train, {len(val)} held out ({time.time() - t0:.0f} s to prepare)",
        flush=True,
    )
    (cmd_probe if args.stage == "probe" else cmd_finetune)(args, classes, train, val)


if __name__ == "__main__":
    main()
