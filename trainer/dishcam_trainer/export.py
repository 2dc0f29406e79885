"""ONNX export of a checkpoint's towers and head, and a `pack.toml` in dishcam's manifest format.

The manifest is the Rust `dishcam_models::manifest::Manifest` (format_version 1, unknown fields
refused). What each file holds:

* `image_encoder.onnx`: `pixels` f32 [batch, 3, H, W] (NCHW, RGB, normalised as
  `[image_encoder.preprocess]` says) -> `embedding` f32 [batch, D]. Fusion packs: the tower's
  raw pooled features. Retrieval packs: the projected, L2-normalised shared-space embedding.
* `text_encoder.onnx`: `input_ids`, `attention_mask` (and `token_type_ids` for BERT) i64
  [batch, sequence] -> `sentence_embedding` f32 [batch, D], pooled and normalised in the graph
  (`pooled_in_graph = true`). Retrieval packs embed a recipe as "title. ingredients. instructions".
* `head_<name>.onnx`: `features` f32 [batch, D] -> `logits` f32 [batch, classes]. `D` is the
  image dim, the text dim, or image dim + text dim (image part first) for fusion heads; the head
  L2-normalises each part itself (dishcam normalises the parts of a fusion input too; doing it
  twice changes nothing).
* Late fusion has no model file: the pack holds the checkpoint's image and text branches as
  `image` and `text` heads and a `late-fusion` head whose `fuse` table names them, with
  `text_weight = 1 - late_weight`; dishcam mixes their log-probabilities.
* `default_head` names the image head, `text_head` the text head and `fusion_head` the fusion
  head, when the pack has them.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .models import ProjectedImage, ProjectedText
from .train import rebuild
from .utils import atomic_write_bytes, load_checkpoint, sha256_file

OPSET = 17
FUSION = ("early-fusion", "late-fusion")


class ExportError(Exception):
    """The checkpoint cannot become a pack; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# TOML


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} to TOML")
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(d: dict, prefix: str = "") -> str:
    """A small TOML writer for nested dicts, lists of scalars and lists of tables."""
    lines = []
    for k, v in d.items():
        if v is None or isinstance(v, dict) or _is_table_array(v):
            continue
        lines.append(f"{k} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            body = to_toml(v, name)
            has_own = not v or any(not (isinstance(x, dict) or _is_table_array(x) or x is None) for x in v.values())
            out += (f"\n[{name}]\n" + body) if has_own else body
        elif _is_table_array(v):
            for item in v:
                out += f"\n[[{name}]]\n" + to_toml(item, name)
    return out


# ---------------------------------------------------------------------------------------------
# ONNX


def _onnx_bytes(module: nn.Module, args: tuple, input_names, output_names, dynamic_axes) -> bytes:
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return buf.getvalue()


def _pack_file(out: Path, name: str, data: bytes) -> dict:
    atomic_write_bytes(out / name, data)
    return {"file": name, "sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}


def _compare(session_path: Path, feeds: dict, ref: np.ndarray, what: str, tol: float) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    if got.shape != ref.shape:
        raise ExportError(f"{session_path}: onnxruntime output {got.shape} differs from PyTorch's {ref.shape}")
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    ok = err <= tol * max(1.0, scale)
    if not ok:
        raise ExportError(
            f"{session_path}: onnxruntime differs from PyTorch by {err:.3g} (max |ref| {scale:.3g}, "
            f"tolerance {tol:g}); the {what} graph did not export faithfully"
        )
    return {"model": session_path.name, "max_abs_diff": err, "max_abs_ref": scale}


class _TextGraph(nn.Module):
    """Fixes the argument order the exported graph takes."""

    def __init__(self, inner: nn.Module, token_types: bool):
        super().__init__()
        self.inner = inner
        self.token_types = token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.inner(input_ids, attention_mask, token_type_ids if self.token_types else None)


def _export_image(out: Path, tower_module: nn.Module, spec, dim: int, report: list, tol: float) -> dict:
    size = spec.size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    data = _onnx_bytes(
        tower_module, (x,), ["pixels"], ["embedding"], {"pixels": {0: "batch"}, "embedding": {0: "batch"}}
    )
    variant = _pack_file(out, "image_encoder.onnx", data)
    with torch.no_grad():
        ref = tower_module(x).numpy()
    report.append(_compare(out / "image_encoder.onnx", {"pixels": x.numpy()}, ref, "image encoder", tol))
    return {
        "layout": "nchw",
        "embedding_output": "embedding",
        "embedding_dim": dim,
        "variants": {"fp32": variant},
        "input": {"name": "pixels", "dtype": "f32", "shape": ["batch", 3, size, size]},
        "preprocess": {
            "width": size,
            "height": size,
            "interpolation": spec.interpolation,
            "colour_order": "rgb",
            "range": float(spec.range),
            "mean": [float(v) for v in spec.mean],
            "std": [float(v) for v in spec.std],
            "crop": {"mode": "center", "fraction": float(spec.crop_fraction)},
        },
        "outputs": [{"name": "embedding", "dtype": "f32", "shape": ["batch", dim]}],
    }


def _export_text(
    out: Path, module: nn.Module, tower, tokenizer, max_length: int, dim: int, report: list, tol: float
) -> dict:
    from .models import encode_texts

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if tower.uses_token_types else [])
    sample = encode_texts(tokenizer, ["apple pie with cinnamon", "a bowl of ramen. noodles, broth"], max_length)
    graph = _TextGraph(module, tower.uses_token_types)
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    data = _onnx_bytes(graph, args, names, ["sentence_embedding"], axes)
    variant = _pack_file(out, "text_encoder.onnx", data)
    tok = tokenizer.to_str()
    tok_file = _pack_file(out, "tokenizer.json", tok.encode("utf-8"))
    with torch.no_grad():
        ref = graph(*args).numpy()
    report.append(_compare(out / "text_encoder.onnx", {n: sample[n].numpy() for n in names}, ref, "text encoder", tol))
    return {
        "max_length": max_length,
        "embedding_output": "sentence_embedding",
        "embedding_dim": dim,
        "pooling": tower.pooling,
        "normalize": True,
        "pooled_in_graph": True,
        "variants": {"fp32": variant},
        "tokenizer": tok_file,
        "inputs": [{"name": n, "dtype": "i64", "shape": ["batch", "sequence"]} for n in names],
        "outputs": [{"name": "sentence_embedding", "dtype": "f32", "shape": ["batch", dim]}],
    }


class _BranchHead(nn.Module):
    """One branch of a late-fusion head as a stand-alone head over that branch's features."""

    def __init__(self, head, branch: int):
        super().__init__()
        self.linear = head.linears[branch]

    def forward(self, x):
        return self.linear(nn.functional.normalize(x, dim=-1))


def _export_head(out: Path, name: str, kind: str, module: nn.Module, dim: int, classes: list, report, tol) -> dict:
    x = torch.randn(3, dim, generator=torch.Generator().manual_seed(1))
    fname = f"head_{name}.onnx"
    data = _onnx_bytes(module, (x,), ["features"], ["logits"], {"features": {0: "batch"}, "logits": {0: "batch"}})
    variant = _pack_file(out, fname, data)
    with torch.no_grad():
        ref = module(x).numpy()
    report.append(_compare(out / fname, {"features": x.numpy()}, ref, f"head '{name}'", tol))
    labels = _pack_file(out, f"labels_{name}.txt", ("\n".join(classes) + "\n").encode("utf-8"))
    return {
        "name": name,
        "kind": kind,
        "classes": len(classes),
        "temperature": 1.0,
        "variants": {"fp32": variant},
        "labels": labels,
    }


def export_pack(
    checkpoint: str | Path,
    out: str | Path,
    name: str = "trained",
    version: str = "0.1.0",
    description: str = "",
    max_length: int | None = None,
    tol: float = 1e-4,
    overwrite: bool = False,
) -> dict:
    """Writes `out/` (ONNX files, labels, tokenizer, pack.toml) from a trainer checkpoint and checks
    every graph against PyTorch with onnxruntime. Returns {"pack": path, "checks": [...]}."""
    ckpt_path = Path(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    task, model, tokenizer = rebuild(ckpt)
    cfg = ckpt["model_config"]
    out = Path(out)
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise ExportError(f"{out}: exists and is not empty; pass --overwrite or choose a new directory")
        if overwrite:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    max_length = max_length or cfg.get("max_length") or 128
    report: list = []
    manifest: dict = {
        "format_version": 1,
        "name": name,
        "version": version,
        "description": description or f"dishcam-trainer {task} checkpoint {ckpt_path.name}",
        "provenance": [
            {
                "package": "dishcam-trainer",
                "version": __version__,
                "sha256": sha256_file(ckpt_path),
                "note": f"{task} checkpoint {ckpt_path.name}, epoch {ckpt.get('epoch', -1) + 1}; "
                "sha256 is the checkpoint's",
            }
        ],
    }
    if task == "fusion":
        kind = cfg["head"]
        classes = list(cfg["classes"])
        dims = []
        if model.image is not None:
            manifest["image_encoder"] = _export_image(out, model.image, model.image.spec, model.image.dim, report, tol)
            dims.append(model.image.dim)
        if model.text is not None:
            manifest["text_encoder"] = _export_text(
                out, model.text, model.text, tokenizer, max_length, model.text.dim, report, tol
            )
            dims.append(model.text.dim)
        if kind == "late-fusion":
            # dishcam runs late fusion itself from an image head and a text head of the pack:
            # log p = (1 - text_weight) log p_image + text_weight log p_text.
            heads = [
                _export_head(out, "image", "image", _BranchHead(model.head, 0), dims[0], classes, report, tol),
                _export_head(out, "text", "text", _BranchHead(model.head, 1), dims[1], classes, report, tol),
            ]
            labels = _pack_file(out, "labels_late-fusion.txt", ("\n".join(classes) + "\n").encode("utf-8"))
            heads.append(
                {
                    "name": "late-fusion",
                    "kind": "late-fusion",
                    "classes": len(classes),
                    "temperature": 1.0,
                    "labels": labels,
                    "fuse": {"image_head": "image", "text_head": "text", "text_weight": 1.0 - model.head.late_weight},
                }
            )
        else:
            heads = [_export_head(out, kind, kind, model.head, sum(dims), classes, report, tol)]
        manifest["heads"] = heads
        for key, kinds in (("default_head", ("image",)), ("text_head", ("text",)), ("fusion_head", FUSION)):
            named = [h["name"] for h in heads if h["kind"] in kinds]
            if named:
                manifest[key] = named[0]
    else:
        if model.recipe_kind == "ht":
            raise ExportError(
                "the H-T hierarchical recipe encoder takes three token tensors (title, ingredient and "
                "instruction sentences), which dishcam's text-encoder path does not run; it is kept for "
                "research parity. Train with --recipe-encoder text for a deployable recipe tower."
            )
        img = ProjectedImage(model.image, model.image_proj)
        manifest["image_encoder"] = _export_image(out, img, model.image.spec, model.dim, report, tol)
        txt = ProjectedText(model.recipe, model.recipe_proj)
        manifest["text_encoder"] = _export_text(out, txt, model.recipe, tokenizer, max_length, model.dim, report, tol)
    atomic_write_bytes(out / "pack.toml", to_toml(manifest).encode("utf-8"))
    return {"pack": str(out), "checks": report}
