#!/usr/bin/env python3
"""AdaRound for the lite pack's INT8 image encoder: learned weight rounding, layer by layer.

Round-to-nearest is not the best rounding of a layer's weights: the error of a layer's output is
what matters, and rounding some weights the other way can cancel others' errors. AdaRound
(Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization") learns, per
weight, whether to round down or up, by minimising the layer's output error on calibration
photos. Each quantised Conv is done in graph order:

- its input is the activation the INT8 model (with the layers before it already re-rounded)
  computes, dequantised, so each layer also corrects the error the layers before it left;
- its target is the fp32 model's output of the same layer (after its ReLU6, if any);
- the bias it is judged with is the one `dishcam calibrate` will write: the fp32 bias minus the
  mean error of the rounded weights, dW . E[x] (E[x] from the calibration table);
- the loss is the squared output error plus AdaRound's regulariser, which pushes each weight's
  soft rounding to 0 or 1 (its exponent beta annealed from 20 to 2 after a 20 % warm-up).

Output: the rounding table, a JSON map from each weight initialiser's name to the positions (in
row-major order) whose learned rounding differs from round-to-nearest-even (encoded as
calibration/src/rounding.rs reads them). `dishcam calibrate --rounding FILE` applies it; the
scales do not change. The INT8 model learned from must be the one the calibration table (amax,
layers kept in fp32, channel means) builds without rounding: the pack's, or `--int8`.

Photos: the calibration split `dishcam calibrate` uses (FNV-1a hash of "<file>/<class>"; 20 % held
out), the first --samples in hash order, so no validation photo is seen. The held-out photos only
score the result (top-1 agreement of the Food-101 head and embedding cosine against fp32).

  ~/.cache/dishcam-train/bin/python scripts/adaround_lite.py \
      --pack ~/.local/share/dishcam/packs/lite --data ../shared/data/food101-10class/train \
      --out install/assets/lite/rounding.json
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from int8_error_budget import Judge, Start, initialisers, preprocess, set_bias, split, start_arguments
from onnx import numpy_helper as nh

ZETA, GAMMA = 1.1, -0.1


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class Layer:
    """One quantised Conv of the INT8 model, with what AdaRound needs of it."""

    def __init__(self, conv, int8_init, fp32_init, relu6_outputs):
        self.conv = conv
        self.dq_input = conv.input[0]
        self.source = self.dq_input.removesuffix("_dq")
        self.weight = conv.input[1].removesuffix("_dq")
        self.q_name = self.weight + "_quantized"
        self.w = nh.to_array(fp32_init[self.weight]).astype(np.float32)
        self.scale = nh.to_array(int8_init[self.weight + "_scale"]).astype(np.float32)
        self.output = conv.output[0]
        self.relu6 = self.output in relu6_outputs
        self.group = attr(conv, "group", 1)
        self.stride = attr(conv, "strides", [1, 1])
        self.pads = attr(conv, "pads", [0, 0, 0, 0])
        self.dilation = attr(conv, "dilations", [1, 1])


def quantised_convs(int8: onnx.ModelProto, fp32: onnx.ModelProto) -> list[Layer]:
    int8_init, fp32_init = initialisers(int8), initialisers(fp32)
    relu6_outputs = {n.output[0] for n in fp32.graph.node if n.op_type == "Clip"}
    return [
        Layer(n, int8_init, fp32_init, relu6_outputs)
        for n in int8.graph.node
        if n.op_type == "Conv" and n.input[1].endswith("_dq") and n.input[0].endswith("_dq")
    ]


def collect(model: onnx.ModelProto, name: str, photos: list[np.ndarray]) -> torch.Tensor:
    m = copy.deepcopy(model)
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return torch.from_numpy(np.concatenate([s.run([name], {"pixels": x})[0] for x in photos]))


def learn_rounding(layer: Layer, x: torch.Tensor, target: torch.Tensor, mean_in, bias, args):
    """The learned rounding (0 down, 1 up, from the floor) of `layer`'s weights."""
    w = torch.from_numpy(layer.w)
    s = torch.from_numpy(layer.scale).reshape(-1, 1, 1, 1)
    floor = torch.floor(w / s)
    rest = w / s - floor
    # h(V) starts at the fractional part, so the soft weights start equal to the fp32 weights.
    v = (-torch.log((ZETA - GAMMA) / (rest.clamp(1e-4, 1 - 1e-4) - GAMMA) - 1)).requires_grad_()
    opt = torch.optim.Adam([v], lr=args.lr)
    b = torch.from_numpy(bias.astype(np.float32))
    mean = None if mean_in is None else torch.from_numpy(np.asarray(mean_in, np.float32))
    top, left, bottom, right = layer.pads
    x = F.pad(x, (left, right, top, bottom))
    k = layer.w.shape[2]
    sh, sw = layer.stride
    kh = (k - 1) * layer.dilation[0] + 1
    n, _, oh, ow = target.shape
    ph, pw = min(oh, args.patch), min(ow, args.patch)
    gen = torch.Generator().manual_seed(0)

    def forward(h, xb):
        wq = s * torch.clamp(floor + h, -127, 127)
        bb = b
        if mean is not None:
            dw = (wq - w).sum(dim=(2, 3))
            bb = b - (dw[:, 0] * mean if layer.group > 1 else dw @ mean)
        y = F.conv2d(xb, wq, bb, stride=layer.stride, dilation=layer.dilation, groups=layer.group)
        return y.clamp(0, 6) if layer.relu6 else y

    warm = int(0.2 * args.iters)
    for it in range(args.iters):
        idx = torch.randint(0, n, (args.batch,), generator=gen)
        r0 = int(torch.randint(0, oh - ph + 1, (1,), generator=gen))
        c0 = int(torch.randint(0, ow - pw + 1, (1,), generator=gen))
        xb = x[idx, :, r0 * sh : r0 * sh + (ph - 1) * sh + kh, c0 * sw : c0 * sw + (pw - 1) * sw + kh]
        tb = target[idx, :, r0 : r0 + ph, c0 : c0 + pw]
        h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)
        rec = (forward(h, xb) - tb).pow(2).sum(1).mean()
        if it < warm:
            loss = rec
        else:
            beta = 2 + (20 - 2) * (1 - (it - warm) / (args.iters - warm))
            loss = rec + args.reg * (1 - (2 * h - 1).abs().pow(beta)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        hard = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA >= 0.5).float()
        nearest = torch.round(w / s) - floor
        xs = x[: min(n, 64)]
        ts = target[: min(n, 64)]
        err = [float((forward(r, xs) - ts).pow(2).sum(1).mean()) for r in (nearest, hard)]
    return hard.numpy(), err


def apply(int8: onnx.ModelProto, layer: Layer, ints: np.ndarray, fp32_bias, mean_in) -> None:
    """Writes `layer`'s new int8 weights, and its bias corrected for them, into `int8`."""
    init = initialisers(int8)
    init[layer.q_name].CopyFrom(nh.from_array(ints.astype(np.int8), layer.q_name))
    if fp32_bias is None:
        return
    bias = fp32_bias.astype(np.float64)
    if mean_in is not None:
        dq = ints.astype(np.float64) * layer.scale.reshape(-1, 1, 1, 1) - layer.w
        dw = dq.sum(axis=(2, 3))
        bias = bias - (dw[:, 0] * mean_in if layer.group > 1 else dw @ np.asarray(mean_in, np.float64))
    set_bias(init, layer.conv, bias)


def encode(positions: np.ndarray) -> str:
    """Ascending positions as calibration/src/rounding.rs reads them: the gaps between them as
    LEB128 varints, zlib-compressed, in base64."""
    raw, nxt = bytearray(), 0
    for p in positions.tolist():
        gap = p - nxt
        while gap >= 0x80:
            raw.append((gap & 0x7F) | 0x80)
            gap >>= 7
        raw.append(gap)
        nxt = p + 1
    return base64.b64encode(zlib.compress(bytes(raw), 9)).decode()


def rerounded(w: np.ndarray, scale: np.ndarray, ints: np.ndarray) -> np.ndarray:
    """Positions (row-major) where `ints` differs from round-to-nearest-even of w / scale. The
    runtime only learns where, not which way: the other rounding from nearest (see
    rounding.rs `reround`), which this checks each one is."""
    v = w / scale
    nearest = np.clip(np.round(v), -127, 127)
    changed = np.flatnonzero((ints != nearest).ravel())
    other = np.where(np.round(v) > v, np.round(v) - 1, np.round(v) + 1)
    other = np.clip(other, -127, 127).ravel()
    if not np.array_equal(ints.ravel()[changed], other[changed]):
        raise SystemExit("a learned rounding is more than one step from nearest; this is a bug")
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    start_arguments(ap)
    ap.add_argument("--out", type=Path, required=True, help="where to write the rounding table")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=28, help="output rows/columns per sample")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--reg", type=float, default=0.01)
    ap.add_argument("--validate", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    start = Start(args)
    fp32, int8, table = start.fp32, start.int8, start.table
    if table.get("weight_rounding"):
        raise SystemExit(f"{start.table_path}: this table already has a learned rounding; learn from one without")
    means = table["channel_means"]
    calib_paths, valid_paths = split(args.data)
    calib = [preprocess(p) for p in calib_paths[: args.samples]]
    print(f"{len(calib)} calibration photos, {min(len(valid_paths), args.validate)} held out", flush=True)
    fp32_init = initialisers(fp32)
    original = copy.deepcopy(int8)
    table_out = {}
    layers = quantised_convs(int8, fp32)
    for i, layer in enumerate(layers):
        t0 = time.time()
        x = collect(int8, layer.dq_input, calib)
        target = collect(fp32, layer.output, calib)
        mean_in = means.get(layer.source)
        bias_name = layer.conv.input[2].removesuffix("_dq") if len(layer.conv.input) > 2 else None
        fp32_bias = nh.to_array(fp32_init[bias_name]) if bias_name else None
        if fp32_bias is None:
            fp32_bias = np.zeros(layer.w.shape[0], np.float32)
        up, (e_near, e_ada) = learn_rounding(layer, x, target, mean_in, fp32_bias, args)
        s = layer.scale.reshape(-1, 1, 1, 1)
        ints = np.clip(np.floor(layer.w / s) + up, -127, 127)
        apply(int8, layer, ints, fp32_bias if bias_name else None, mean_in)
        changed = rerounded(layer.w, s, ints)
        table_out[layer.weight] = encode(changed)
        print(
            f"[{i + 1}/{len(layers)}] {layer.weight}: {changed.size}/{ints.size} "
            f"re-rounded, output error {e_near:.4g} -> {e_ada:.4g} ({time.time() - t0:.0f} s)",
            flush=True,
        )
        del x, target
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model_sha256": table["model_sha256"], "weights": table_out}, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}", flush=True)
    valid = [preprocess(p) for p in valid_paths[: args.validate]]
    judge = Judge(fp32, start.head, valid)
    for name, model in [("nearest (as shipped)", original), ("adaround", int8)]:
        flips, cos = judge.check(model)
        print(f"{name:22} top-1 agreement {1 - flips / len(valid):.2%} ({flips} flips), cosine {cos:.5f}")
    onnx.save(int8, args.out.with_suffix(".onnx"))


if __name__ == "__main__":
    main()
