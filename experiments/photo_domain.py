"""How Food-101's 64 px set was made, and what separates food from no dish at 64 px.

Two questions behind issue 23's design, answered on the installed `lite` pack's fp32 encoder
with onnxruntime and Pillow (preprocessing approximated in Pillow; the numbers the project
reports come from `dishcam eval probe` and `dishcam eval no-dish`, not from here):

1. Which preparation of our full-size photos matches the 64 px set's own files? On the ids both
   sets share, the mean absolute pixel difference for bilinear/bicubic/Lanczos resizing with and
   without a JPEG round trip at quality 75, and a logistic probe's held-out accuracy at telling
   the set's photos from ours prepared each way (5 folds by id).
2. Does the encoder's ImageNet food mass (the softmax share on food, dish and tableware
   classes) still tell food from no dish on 64 px photos? Thresholds at 97 % food recall on the
   64 px set; rejection on scikit-image's sample photos and generated frames, prepared to 64 px
   or as they come.

Usage: python experiments/photo_domain.py [DATA] [SKIMAGE_DATA]
  (defaults: ../shared/data and ~/.cache/dishcam-test/skimage-data)
"""

import io
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "../shared/data")
SKIMAGE = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else pathlib.Path.home() / ".cache/dishcam-test/skimage-data")
PACK = pathlib.Path.home() / ".local/share/dishcam/packs/lite"


def food_classes():
    return json.loads((REPO / "install/assets/lite/no_dish.json").read_text())["classes"]


def square(im):
    w, h = im.size
    s = min(w, h)
    return im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


def prepare(im, mode):
    im = im.convert("RGB")
    if mode == "as-they-come":
        return im
    filt = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    name, _, jpeg = mode.partition("+")
    im = square(im).resize((64, 64), filt[name])
    if jpeg:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=75)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return im


def preprocess(im):
    w, h = im.size
    cw, ch = w * 0.875, h * 0.875
    im = im.crop(((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2))
    im = im.resize((224, 224), Image.BILINEAR)
    return ((np.asarray(im, dtype=np.float32) - 127) / 128).transpose(2, 0, 1)


def encode(session, images, batch=32):
    emb, logits = [], []
    for i in range(0, len(images), batch):
        x = np.stack([preprocess(im) for im in images[i : i + batch]])
        e, ll = session.run(["embedding", "logits"], {"pixels": x})
        emb.append(e)
        logits.append(ll)
    return np.concatenate(emb), np.concatenate(logits)


def fit_logistic(x, y):
    """L2-regularised logistic regression on standardised `x`: (w, b, mean, sd)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b0 = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b0], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b0, yt)
        loss = loss + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b0.detach(), mu, sd


def probe(a, b, folds=5):
    """Held-out accuracy of a logistic probe telling rows of `a` from the paired rows of `b`."""
    n = len(a)
    perm = np.random.default_rng(0).permutation(n)
    acc = []
    for k in range(folds):
        test = perm[k::folds]
        train = np.setdiff1d(perm, test)
        x = np.concatenate([a[train], b[train]])
        y = np.r_[np.zeros(len(train)), np.ones(len(train))]
        w, b0, mu, sd = fit_logistic(x, y)
        t = (np.concatenate([a[test], b[test]]) - mu) / sd
        said = (torch.tensor(t, dtype=torch.float32) @ w + b0).numpy() > 0
        acc.append((said == np.r_[np.zeros(len(test)), np.ones(len(test))]).mean())
    return float(np.mean(acc))


def food_mass(logits, classes):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p[:, classes].sum(1)


def generated():
    rng = np.random.default_rng(0)
    frames = [Image.new("RGB", (640, 480), c) for c in [(0, 0, 0), (255, 255, 255), (128, 128, 128)]]
    frames.append(Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)))
    ramp = np.tile(np.linspace(0, 255, 640)[None, :, None], (480, 1, 3)).astype(np.uint8)
    frames.append(Image.fromarray(ramp))
    return frames


def main():
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(PACK / "image_encoder.onnx"), opts)
    small, full = DATA / "food101-64px/train", DATA / "food101-10class/train"
    pairs = [
        (c.name, f.name)
        for c in sorted(full.iterdir())
        for f in sorted(c.iterdir())
        if (small / c.name / f.name).is_file()
    ]
    print(f"{len(pairs)} ids in both sets")
    ref = [Image.open(small / c / f).convert("RGB") for c, f in pairs]
    ours = [Image.open(full / c / f).convert("RGB") for c, f in pairs]
    e_ref, _ = encode(session, ref)
    modes = ["as-they-come", "bilinear", "bilinear+jpeg", "bicubic+jpeg", "lanczos+jpeg"]
    for mode in modes:
        prepared = [prepare(im, mode) for im in ours]
        if mode != "as-they-come":
            pairs = zip(prepared, ref, strict=True)
            diff = np.mean([np.abs(np.asarray(p, float) - np.asarray(r, float)).mean() for p, r in pairs])
        else:
            diff = float("nan")
        e, _ = encode(session, prepared)
        print(f"{mode:14s} pixel diff {diff:5.2f}  probe {probe(e_ref, e):.3f}")

    classes = food_classes()
    all_small = sorted(small.glob("*/*.jpg"))[::5]
    _, l_food = encode(session, [Image.open(p).convert("RGB") for p in all_small])
    threshold = np.quantile(food_mass(l_food, classes), 0.03)
    sk = sorted(SKIMAGE.glob("*.png")) + sorted(SKIMAGE.glob("*.jpg"))
    for mode in ["bicubic+jpeg", "as-they-come"]:
        _, l_sk = encode(session, [prepare(Image.open(p), mode) for p in sk])
        _, l_gen = encode(session, [prepare(im, mode) for im in generated()])
        rej_sk = (food_mass(l_sk, classes) < threshold).mean()
        rej_gen = (food_mass(l_gen, classes) < threshold).mean()
        print(
            f"food mass >= {threshold:.3f} (97% of 64 px food), non-food {mode}: "
            f"rejected {rej_sk:.2f} of scikit-image, {rej_gen:.2f} of generated"
        )


if __name__ == "__main__":
    main()
