#!/usr/bin/env python3
"""End-to-end fine-tuning of the lite pack's INT8 image encoder: an experiment, not shipped.

Everything `dishcam calibrate` does is post-training and local: each activation's range comes from
its own histogram, each layer's weight rounding (scripts/adaround_lite.py) from its own output
error. This script asks how much end-to-end learning adds. It runs the INT8 Q/DQ graph that
`calibrate` wrote in PyTorch, with onnxruntime's quantiser (round half to even, saturate to uint8
around the zero point; the rounding passed straight through for the gradient), and minimises the
Food-101 head's KL divergence from the fp32 model's predictions plus the embedding's relative
squared error, on calibration photos. What it learns (--learn):

- ranges: every quantised activation's step size (LSQ, Esser et al. 2020), from the table's;
- rounding: also each quantised weight's rounding, down or up from its floor (an end-to-end
  AdaRound; the sign of a logit, moved by the gradient passed through the hard choice, so every
  forward is a valid int8 model), with the bias `calibrate` writes for it (fp32 bias - dW.E[x]);
- weights: also the int8 weights themselves, in units of their step, and the biases (short
  quantisation-aware fine-tuning; the weight scales stay).

Tensors after a ReLU6 that the uint8 quantisation absorbed (zero point 0) keep their range within
[0, 6], or the clamp would be lost. Photos: `dishcam calibrate`'s split (FNV-1a of
"<file>/<class>", 20 % held out), the first --samples calibration photos in hash order; the held-out
photos only score the result (top-1 agreement of the Food-101 head and embedding cosine, with
onnxruntime on the rewritten model). Writes the learned ranges ({model_sha256, amax}) to --out and
the rewritten model beside it (.onnx). `calibrate` has no way to take them in: none was worth it.

Measured on 2026-11-23 (726 held-out photos; onnxruntime in Python, all optimisations; the
shipped table as the start, 12 flips, cosine 0.99913 in this run):
- ranges, 500 photos, 300 steps: 10 flips, cosine 0.99922. The signed (residual) ranges shrink
  to 0.74-0.81 of entropy's; the ReLU6 ones stay at their bound.
- rounding, 500 photos, 400 steps: 3156 weights move; 15 flips, cosine 0.99922.
- weights, 3024 photos (--samples 4000), 600 steps, --weight-lr 0.01: 2259 weights move; 14 flips,
  cosine 0.99921. At --weight-lr 0.03 (400 steps) and 0.1 (700) it diverges: the embedding error
  is 10x and 150x the start's within 200 steps, and those runs were stopped. With
  --optimiser sgd (momentum 0.9; gradients in step units are about 1e-5 at the 99th percentile):
  --weight-lr 300 --bias-lr 0.02 diverged within 25 steps (error x4000); --weight-lr 20
  --bias-lr 0.002 had moved 3 weights after 50 steps, error 0.00184 -> 0.00226 (stopped for time).
The per-batch loss does not fall visibly in any of them: rounding noise dominates it (two
evaluations of the same INT8 model that differ only in float summation order, this script's
PyTorch and onnxruntime, agree to cosine 0.9988, as far apart as INT8 is from fp32, because
rounding-boundary differences cascade through 16 blocks).

  ~/.cache/dishcam-train/bin/python experiments/int8_finetune_lite.py \
      --pack ~/.local/share/dishcam/packs/lite --data ../shared/data/food101-10class/train \
      --learn ranges --out ranges.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper as nh

# The split, preprocessing and Judge shared by the INT8 scripts are in scripts/int8_error_budget.py,
# which stays in scripts/ because scripts/adaround_lite.py (the shipped rounding) imports it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from int8_error_budget import Judge, Start, initialisers, preprocess, session, split, start_arguments


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def fold_dequantise(node: onnx.NodeProto, init: dict) -> np.ndarray:
    """A DequantizeLinear of constants, evaluated: (q - zero point) x scale along its axis."""
    q = nh.to_array(init[node.input[0]]).astype(np.float64)
    scale = nh.to_array(init[node.input[1]]).astype(np.float64)
    zp = nh.to_array(init[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[attr(node, "axis", 1)] = -1
        scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
    return ((q - zp) * scale).astype(np.float32)


class Int8Graph(torch.nn.Module):
    """The INT8 Q/DQ image encoder, run op by op, with each activation's scale a parameter
    (stored as its log, so steps are relative). Computes the `embedding` output only."""

    def __init__(self, model: onnx.ModelProto, fp32: onnx.ModelProto, means: dict, learn: str):
        super().__init__()
        self.learn = learn
        self.weights = torch.nn.ParameterDict()
        self.biases = torch.nn.ParameterDict()
        init = initialisers(model)
        fp32_init = initialisers(fp32)
        self.rounding = torch.nn.ParameterDict()
        self.convs: dict[str, dict] = {}
        self.consts: dict[str, torch.Tensor] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.log_scale = torch.nn.ParameterDict()
        self.key: dict[str, str] = {}
        self.zero_point: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        for name, t in init.items():
            if t.data_type == onnx.TensorProto.FLOAT:
                self.consts[name] = torch.from_numpy(nh.to_array(t).copy())
        for n in model.graph.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in init:
                self.consts[n.output[0]] = torch.from_numpy(fold_dequantise(n, init))
                continue
            if n.op_type == "QuantizeLinear":
                scale = n.input[1]
                key = f"a{len(self.key)}"
                self.key[scale] = key
                self.log_scale[key] = torch.nn.Parameter(
                    torch.tensor(float(np.log(nh.to_array(init[scale]))), dtype=torch.float64)
                )
                self.zero_point[scale] = float(nh.to_array(init[n.input[2]]))
            if learn != "ranges" and n.op_type == "Conv" and n.input[1].endswith(".weight_dq"):
                self.convs[n.output[0]] = self.learnable_conv(n, init, fp32_init, means)
            self.nodes.append(n)
        # A zero point of 0 marks a tensor whose ReLU6 clamp the quantisation absorbed.
        for scale, zp in self.zero_point.items():
            if zp == 0:
                self.bound[scale] = 6.0 / 255.0

    def learnable_conv(self, conv, init: dict, fp32_init: dict, means: dict) -> dict:
        """A quantised conv whose weights' rounding (down or up from the floor) is learned: a
        logit per weight, its sign the rounding, moved by the gradient passed straight through
        the hard choice (the forward always runs a valid int8 model). The bias is the one
        `dishcam calibrate` writes for that rounding: fp32 bias - dW . E[x]."""
        base = conv.input[1].removesuffix("_dq")
        w = nh.to_array(fp32_init[base]).astype(np.float32)
        s = nh.to_array(init[base + "_scale"]).astype(np.float32).reshape(-1, 1, 1, 1)
        floor = np.floor(w / s)
        up = nh.to_array(init[base + "_quantized"]).astype(np.float32) - floor
        if not np.all((up == 0) | (up == 1)):
            raise SystemExit(f"{base}: an int8 weight is not its fp32 weight rounded down or up")
        key = f"w{len(self.convs)}"
        bias = conv.input[2].removesuffix("_dq") if len(conv.input) > 2 else None
        mean = means.get(conv.input[0].removesuffix("_dq"))
        if self.learn == "rounding":
            self.rounding[key] = torch.nn.Parameter(torch.from_numpy(np.where(up == 1, 0.5, -0.5).astype(np.float32)))
        else:
            # Quantisation-aware fine-tuning: the float weights (rounded to nearest, straight
            # through) and the bias, starting from the bias the table's correction wrote.
            # In units of the weight's step, from the int8 weights as written (each at the
            # centre of its rounding bin), so the first forward is the model as written.
            ints = nh.to_array(init[base + "_quantized"]).astype(np.float32)
            self.weights[key] = torch.nn.Parameter(torch.from_numpy(ints))
            b0 = (
                fold_dequantise(next(n for n in self.dq_nodes if n.output[0] == conv.input[2]), init)
                if bias
                else np.zeros(w.shape[0], np.float32)
            )
            self.biases[key] = torch.nn.Parameter(torch.from_numpy(b0.copy()))
        return {
            "key": key,
            "name": base,
            "w": torch.from_numpy(w),
            "s": torch.from_numpy(s),
            "floor": torch.from_numpy(floor),
            "bias": torch.from_numpy(nh.to_array(fp32_init[bias]).astype(np.float32)) if bias else None,
            "mean": None if mean is None else torch.tensor(mean, dtype=torch.float32),
            "group": attr(conv, "group", 1),
        }

    def conv_params(self, c: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.learn == "weights":
            v = self.weights[c["key"]]
            r = v + (torch.round(v) - v).detach()
            return c["s"] * torch.clamp(r, -127, 127), self.biases[c["key"]]
        p = torch.sigmoid(self.rounding[c["key"]])
        up = (p >= 0.5).float() + p - p.detach()
        wq = c["s"] * torch.clamp(c["floor"] + up, -127, 127)
        b = c["bias"]
        if b is not None and c["mean"] is not None:
            dw = (wq - c["w"]).sum(dim=(2, 3))
            b = b - (dw[:, 0] * c["mean"] if c["group"] > 1 else dw @ c["mean"])
        return wq, b

    def ints(self) -> dict[str, np.ndarray]:
        """Each learnable conv's int8 weights, as the hard rounding now stands."""
        with torch.no_grad():
            if self.learn == "weights":
                return {
                    c["name"]: torch.clamp(torch.round(self.weights[c["key"]]), -127, 127).numpy()
                    for c in self.convs.values()
                }
            return {
                c["name"]: torch.clamp(c["floor"] + (self.rounding[c["key"]] >= 0).float(), -127, 127).numpy()
                for c in self.convs.values()
            }

    def scale(self, name: str) -> torch.Tensor:
        s = self.log_scale[self.key[name]].exp()
        if name in self.bound:
            s = s.clamp(max=self.bound[name])
        return s.float()

    def scales(self) -> dict[str, float]:
        with torch.no_grad():
            return {name: float(self.scale(name)) for name in self.key}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = dict(self.consts)
        env["pixels"] = x
        for n in self.nodes:
            i = [env.get(name) for name in n.input]
            op = n.op_type
            if op == "QuantizeLinear":
                s, zp = self.scale(n.input[1]), self.zero_point[n.input[1]]
                v = i[0] / s
                # Round half to even as onnxruntime does; the gradient passes straight through.
                r = v + (torch.round(v) - v).detach()
                y = torch.clamp(r + zp, 0, 255)
            elif op == "DequantizeLinear":
                s, zp = self.scale(n.input[1]), self.zero_point[n.input[1]]
                y = (i[0] - zp) * s
            elif op == "Conv":
                top, left, bottom, right = attr(n, "pads", [0, 0, 0, 0])
                xin = F.pad(i[0], (left, right, top, bottom))
                c = self.convs.get(n.output[0])
                weight, bias = self.conv_params(c) if c else (i[1], i[2] if len(i) > 2 else None)
                y = F.conv2d(
                    xin,
                    weight,
                    bias,
                    stride=attr(n, "strides", [1, 1]),
                    dilation=attr(n, "dilations", [1, 1]),
                    groups=attr(n, "group", 1),
                )
            elif op == "Clip":
                y = torch.clamp(i[0], float(i[1]), float(i[2]))
            elif op == "Add":
                y = i[0] + i[1]
            elif op == "GlobalAveragePool":
                y = i[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                y = torch.flatten(i[0], 1)
            elif op == "Identity":
                y = i[0]
            elif op == "Gemm":
                continue  # the ImageNet classifier: not part of the embedding
            else:
                raise SystemExit(f"{n.name}: operator {op} is not supported by this script")
            env[n.output[0]] = y
            if n.output[0] == "embedding":
                return y
        raise SystemExit("the model has no 'embedding' output")


def rewritten(model: onnx.ModelProto, net: Int8Graph) -> onnx.ModelProto:
    """`model` with `net`'s activation scales and weight rounding: new int8 weights, and each
    int32 bias re-quantised at its new scale (input scale x weight scale, as the quantiser writes
    it) so onnxruntime can still fuse the conv."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = initialisers(m)
    scales = net.scales()
    for name, s in scales.items():
        init[name].CopyFrom(nh.from_array(np.asarray(s, np.float32), name))
    float_bias = {}
    with torch.no_grad():
        all_ints = net.ints()
        for c in net.convs.values():
            ints = all_ints[c["name"]]
            init[c["name"] + "_quantized"].CopyFrom(nh.from_array(ints.astype(np.int8), c["name"] + "_quantized"))
            _, b = net.conv_params(c)
            if b is not None:
                float_bias[c["name"].removesuffix(".weight") + ".bias_quantized"] = b.double().numpy()
    producer = {o: n for n in m.graph.node for o in n.output}
    for conv in m.graph.node:
        if conv.op_type not in ("Conv", "Gemm") or len(conv.input) < 3 or not conv.input[2].endswith("_dq"):
            continue
        xdq = producer.get(conv.input[0])
        if xdq is None or xdq.op_type != "DequantizeLinear" or xdq.input[1] not in scales:
            continue
        q = conv.input[2].replace(".bias_dq", ".bias_quantized")
        old = nh.to_array(init[q + "_scale"]).astype(np.float64)
        bias = float_bias.get(q, nh.to_array(init[q]).astype(np.float64) * old)
        wscale = nh.to_array(init[conv.input[1].replace(".weight_dq", ".weight_scale")]).astype(np.float64)
        new = scales[xdq.input[1]] * wscale
        ints = np.round(bias / new)
        if np.abs(ints).max() > 2**31 - 1:
            raise SystemExit(f"{conv.name}: its bias does not fit int32 at the new scale")
        init[q].CopyFrom(nh.from_array(ints.astype(np.int32), q))
        init[q + "_scale"].CopyFrom(nh.from_array(new.astype(np.float32), q + "_scale"))
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    start_arguments(ap)
    ap.add_argument("--out", type=Path, required=True, help="where to write the ranges")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--temperature", type=float, default=1.0, help="of the head's softmax in the KL")
    ap.add_argument("--embedding-weight", type=float, default=1.0, help="of the relative embedding error")
    ap.add_argument(
        "--learn",
        choices=["ranges", "rounding", "weights"],
        default="ranges",
        help="ranges only; also the weights' rounding (up or down); or also the weights and biases (QAT)",
    )
    ap.add_argument("--weight-lr", type=float, default=1e-2, help="in steps of the int8 weight")
    ap.add_argument("--bias-lr", type=float, default=1e-4)
    ap.add_argument("--optimiser", choices=["adam", "sgd"], default="adam", help="for the weights and biases")
    ap.add_argument("--rounding-lr", type=float, default=1e-2)
    ap.add_argument("--validate", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    given = Start(args)
    fp32, int8, table = given.fp32, given.int8, given.table
    head = initialisers(onnx.load(given.head))
    hw = torch.from_numpy(nh.to_array(head["head.weight"]).copy())
    hb = torch.from_numpy(nh.to_array(head["head.bias"]).copy())

    calib_paths, valid_paths = split(args.data)
    calib = np.concatenate([preprocess(p) for p in calib_paths[: args.samples]])
    s = session(fp32)
    emb32 = np.concatenate([s.run(["embedding"], {"pixels": calib[i : i + 1]})[0] for i in range(len(calib))])
    x_all, e_all = torch.from_numpy(calib), torch.from_numpy(emb32)
    p_all = torch.softmax((e_all @ hw.T + hb) / args.temperature, 1)
    print(f"{len(calib)} calibration photos, {min(len(valid_paths), args.validate)} held out", flush=True)

    net = Int8Graph(int8, fp32, table["channel_means"], args.learn)
    start, start_ints = net.scales(), net.ints()
    opt = torch.optim.Adam(
        [
            {"params": list(net.log_scale.parameters()), "lr": args.lr},
            {"params": list(net.rounding.parameters()), "lr": args.rounding_lr},
        ]
    )
    # Weights and biases: Adam moves every weight at about the same rate, noise or not; SGD
    # moves them in proportion to their (momentum-averaged) gradient.
    fine = [
        {"params": list(net.weights.parameters()), "lr": args.weight_lr},
        {"params": list(net.biases.parameters()), "lr": args.bias_lr},
    ]
    opt2 = torch.optim.SGD(fine, momentum=0.9) if args.optimiser == "sgd" else torch.optim.Adam(fine)
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, args.steps) for o in (opt, opt2)]
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(calib), (args.batch,), generator=gen)
        e = net(x_all[idx])
        logq = torch.log_softmax((e @ hw.T + hb) / args.temperature, 1)
        kl = F.kl_div(logq, p_all[idx], reduction="batchmean") * args.temperature**2
        rel = ((e - e_all[idx]).pow(2).sum(1) / e_all[idx].pow(2).sum(1)).mean()
        loss = kl + args.embedding_weight * rel
        opt.zero_grad()
        opt2.zero_grad()
        loss.backward()
        for o in (opt, opt2):
            o.step()
        for sc in scheds:
            sc.step()
        if step % 25 == 0 or step == args.steps - 1:
            now = net.ints()
            flipped = sum(int((a != now[k]).sum()) for k, a in start_ints.items())
            print(
                f"step {step}: {flipped} weights rounded otherwise, kl {kl.item():.5f}, "
                f"relative embedding error {rel.item():.5f} ({time.time() - t0:.0f} s)",
                flush=True,
            )

    scales = net.scales()
    # The table holds ranges: amax = scale x 255 after a ReLU6 (uint8 from 0), scale x 127 else.
    amax = {
        name.removesuffix("_scale"): s * (255.0 if net.zero_point[name] == 0 else 127.0) for name, s in scales.items()
    }
    moved = sorted(((scales[k] / start[k], k) for k in scales), reverse=True)
    print(
        "largest changes (new / entropy):",
        ", ".join(f"{k.removesuffix('_scale')} {r:.2f}" for r, k in moved[:3] + moved[-3:]),
    )
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"model_sha256": table["model_sha256"], "amax": amax}, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}", flush=True)
    valid = [preprocess(p) for p in valid_paths[: args.validate]]
    judge = Judge(fp32, given.head, valid)
    learned = rewritten(int8, net)
    for name, model in [("as written", int8), (f"learned {args.learn}", learned)]:
        flips, cos = judge.check(model)
        print(f"{name:22} top-1 agreement {1 - flips / len(valid):.2%} ({flips} flips), cosine {cos:.5f}")
    onnx.save(learned, args.out.with_suffix(".onnx"))


if __name__ == "__main__":
    main()
