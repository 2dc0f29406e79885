#!/usr/bin/env python3
"""Writes the bad-input corpus under tests/corpus/ (walked by tests/corpus.rs through the CLI).

Everything is generated here from fixed seeds (no photos or recipes from the shared data), so
the corpus is small, reproducible and free to commit. Needs Pillow (`pip install pillow`).

    python3 scripts/make_corpus.py            # rewrites tests/corpus/{images,packs,recipes}

tests/corpus/expected.json says, for every input, what the CLI must do with it:
  {"expect": "ok"}                                 it works (valid but unusual input)
  {"expect": "error", "contains": [needles...]}    exit 1 and one `error:` line naming the problem
Recipe files may instead expect {"expect": "ok", "imported": N, "skipped": M}.
"""

import io
import json
import random
import shutil
import struct
import sys
import zlib
from pathlib import Path

try:
    from PIL import Image
except ImportError:
    sys.exit("make_corpus.py needs Pillow: pip install pillow")

ROOT = Path(__file__).resolve().parent.parent / "tests" / "corpus"
expected = {}


def put(rel, data, expect):
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    expected[rel] = expect


OK = {"expect": "ok"}


def err(*needles):
    return {"expect": "error", "contains": list(needles)}


def dish(w=64, h=48, mode="RGB"):
    """A small picture with some structure (gradients and a square), in `mode`."""
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            inside = w // 4 <= x < w // 2 and h // 4 <= y < h // 2
            px[x, y] = (255, 255, 255) if inside else (x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 128)
    return img.convert(mode) if mode != "RGB" else img


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w, h):
    """A PNG whose header claims w x h, with one tiny IDAT: must be refused from the header."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_claiming(w, h):
    """A baseline JPEG whose SOF0 claims w x h: every header segment intact, the scan cut short."""
    good = encode(dish(16, 16), "JPEG", quality=90)
    i = good.index(b"\xff\xc0")
    sof = bytearray(good[i : i + 2 + struct.unpack(">H", good[i + 2 : i + 4])[0]])
    struct.pack_into(">HH", sof, 5, h, w)
    sos = good.index(b"\xff\xda")
    sos_end = sos + 2 + struct.unpack(">H", good[sos + 2 : sos + 4])[0]
    # Ends with EOI, so the size check (not the cut-short check) is what refuses it.
    return good[:i] + bytes(sof) + good[i + len(sof) : sos_end + 64] + b"\xff\xd9"


def images():
    rng = random.Random(101)
    base = dish()
    jpeg = encode(base, "JPEG", quality=90)
    png = encode(base, "PNG")
    # Valid but unusual: every colour type and bit depth the image crate decodes.
    put("images/ok/grey.png", encode(dish(mode="L"), "PNG"), OK)
    put("images/ok/grey_alpha.png", encode(dish(mode="LA"), "PNG"), OK)
    put("images/ok/rgba.png", encode(dish(mode="RGBA"), "PNG"), OK)
    put("images/ok/palette.png", encode(dish().convert("P", palette=Image.ADAPTIVE, colors=16), "PNG"), OK)
    put("images/ok/grey16.png", encode(dish(mode="L").convert("I;16"), "PNG"), OK)
    put("images/ok/rgb16.png", rgb16_png(dish()), OK)
    put("images/ok/grey.jpg", encode(dish(mode="L"), "JPEG"), OK)
    put("images/ok/cmyk.jpg", encode(dish(mode="CMYK"), "JPEG"), OK)
    put("images/ok/progressive.jpg", encode(base, "JPEG", progressive=True), OK)
    put("images/ok/lossless.webp", encode(base, "WEBP", lossless=True), OK)
    put("images/ok/lossy.webp", encode(base, "WEBP", quality=80), OK)
    put("images/ok/animated.gif", animated_gif(), OK)
    put("images/ok/plain.bmp", encode(base, "BMP"), OK)
    put("images/ok/plain.tiff", encode(base, "TIFF"), OK)
    put("images/ok/one_by_one.png", encode(dish(1, 1), "PNG"), OK)
    put("images/ok/one_by_4000.png", encode(dish(1, 4000), "PNG"), OK)
    put("images/ok/4000_by_one.png", encode(dish(4000, 1), "PNG"), OK)
    # Extensions that lie: decoded by content.
    put("images/ok/png_named.jpg", png, OK)
    put("images/ok/jpeg_named.png", jpeg, OK)
    put("images/ok/no_extension", jpeg, OK)
    # Odd names.
    put("images/ok/with spaces.jpg", jpeg, OK)
    put("images/ok/soupe à l'oignon.jpg", jpeg, OK)
    put("images/ok/ラーメン.png", png, OK)
    # Broken: one clear error line each.
    put("images/bad/empty.jpg", b"", err("empty.jpg"))
    for frac in (0.1, 0.5, 0.9):
        put(f"images/bad/truncated_{int(frac * 100)}.jpg", jpeg[: int(len(jpeg) * frac)], err("truncated_"))
        put(f"images/bad/truncated_{int(frac * 100)}.png", png[: int(len(png) * frac)], err("truncated_"))
    put("images/bad/random.jpg", bytes(rng.randrange(256) for _ in range(4096)), err("random.jpg"))
    put("images/bad/text.png", b"this is not a picture, it is a shopping list\n", err("text.png"))
    put("images/bad/html.jpg", b"<!doctype html><html><body>404</body></html>", err("html.jpg"))
    put("images/bad/huge_60000.png", png_claiming(60000, 60000), err("huge_60000.png", "60000x60000"))
    put("images/bad/huge_65500.jpg", jpeg_claiming(65500, 65500), err("huge_65500.jpg", "65500x65500"))


def rgb16_png(img):
    """16-bit RGB PNG written by hand (Pillow cannot write 48-bit RGB)."""
    w, h = img.size
    raw = b"".join(
        b"\0" + b"".join(struct.pack(">HHH", *(c * 257 for c in img.getpixel((x, y)))) for x in range(w))
        for y in range(h)
    )
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def animated_gif():
    frames = [dish().rotate(a).convert("P", palette=Image.ADAPTIVE) for a in (0, 90, 180)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


PACK = """format_version = 1
name = "corpus"
version = "1.0.0"
description = "a pack from the bad-input corpus"
default_head = "base"

[image_encoder]
layout = "nchw"
embedding_output = "embedding"
embedding_dim = 2

[image_encoder.variants.fp32]
file = "{file}"
sha256 = "{sha}"
bytes = {size}

[image_encoder.input]
name = "pixels"
dtype = "f32"
shape = ["batch", 3, 8, 8]

[image_encoder.preprocess]
width = 8
height = 8
interpolation = "bilinear"
colour_order = "rgb"
range = 255.0
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]

[image_encoder.preprocess.crop]
mode = "center"
fraction = 1.0

[[image_encoder.outputs]]
name = "embedding"
dtype = "f32"
shape = ["batch", 2]

[[heads]]
name = "base"
kind = "image"
encoder_output = "embedding"
classes = 2

[heads.labels]
file = "labels.txt"
sha256 = "{labels_sha}"
bytes = {labels_size}
"""


def packs():
    import hashlib

    def pack(name, onnx, expect, file="image_encoder.onnx", sha=None, size=None, manifest=None, labels=b"a\nb\n"):
        d = f"packs/{name}"
        put(f"{d}/labels.txt", labels, None)
        if onnx is not None:
            put(f"{d}/image_encoder.onnx", onnx, None)
            data = onnx
        else:
            data = b""
        text = (
            manifest
            if manifest is not None
            else PACK.format(
                file=file,
                sha=sha or hashlib.sha256(data).hexdigest(),
                size=len(data) if size is None else size,
                labels_sha=hashlib.sha256(labels).hexdigest(),
                labels_size=len(labels),
            )
        )
        put(f"{d}/pack.toml", text.encode(), None)
        expected[d] = expect

    rng = random.Random(7)
    for k in [k for k, v in expected.items() if v is None]:
        del expected[k]
    pack("empty_onnx", b"", err("image_encoder.onnx"))
    pack("random_onnx", bytes(rng.randrange(256) for _ in range(2048)), err("image_encoder.onnx"))
    pack("text_as_onnx", b"ir_version: 7\nthis is protobuf text, not binary\n", err("image_encoder.onnx"))
    pack("hash_mismatch", b"\x08\x07" * 16, err("image_encoder.onnx", "sha256"), sha="0" * 64)
    pack("missing_file", None, err("image_encoder.onnx"), file="image_encoder.onnx")
    pack("escapes_pack", b"\x08\x07", err("../"), file="../../../../etc/passwd")
    pack("absolute_path", b"\x08\x07", err("/etc/passwd"), file="/etc/passwd")
    pack("wrong_types", b"", err("pack.toml"), manifest='format_version = "one"\nname = 5\n')
    pack("not_toml", b"", err("pack.toml"), manifest="{ this is not toml")
    pack("empty_manifest", b"", err("pack.toml"), manifest="")
    pack(
        "future_format",
        b"",
        err("format_version"),
        manifest=PACK.replace("format_version = 1", "format_version = 99").format(
            file="image_encoder.onnx", sha="0" * 64, size=0, labels_sha="0" * 64, labels_size=0
        ),
    )
    for k in [k for k, v in expected.items() if v is None]:
        del expected[k]


def recipes():
    good = {
        "@context": "https://schema.org",
        "@type": "Recipe",
        "name": "Corpus Tomato Soup",
        "recipeIngredient": ["4 tomatoes", "1 onion"],
        "recipeInstructions": [{"@type": "HowToStep", "text": "Simmer for 20 minutes."}],
    }
    text = json.dumps([good])
    put("recipes/ok/one.jsonld", text.encode(), {"expect": "ok", "imported": 1})
    put("recipes/bad/truncated.jsonld", text[: len(text) // 2].encode(), err("truncated.jsonld"))
    put("recipes/bad/empty.jsonld", b"", err("empty.jsonld"))
    put("recipes/bad/wrong_shape.jsonld", json.dumps([1, "two", None, [3]]).encode(), err("wrong_shape.jsonld"))
    # Lenient where the meaning is clear: a numeric name and a single ingredient string.
    put(
        "recipes/ok/loose_types.jsonld",
        json.dumps({"@type": "Recipe", "name": 5, "recipeIngredient": "x"}).encode(),
        {"expect": "ok", "imported": 1},
    )
    mixed = [
        dict(good, name="Corpus Mixed Soup"),
        {"@type": "Recipe"},
        {"@type": "Recipe", "name": "No Ingredients"},
        dict(good, name="Corpus Bean Stew"),
    ]
    put("recipes/ok/mixed.jsonld", json.dumps(mixed).encode(), {"expect": "ok", "imported": 2, "skipped": 2})
    put(
        "recipes/bad/no_recipe.html",
        b"<html><head><title>A blog</title></head><body>No recipe here.</body></html>",
        err("no_recipe.html"),
    )
    page = (
        '<html><head><script type="application/ld+json">'
        + json.dumps(dict(good, name="Corpus Café Crème"))
        + "</script></head></html>"
    )
    put("recipes/ok/latin1.html", page.encode("latin-1"), {"expect": "ok", "imported": 1})
    header = "title,ingredients,directions,link,source,NER\n"
    row = (
        '"Corpus Pancakes","[""1 cup flour"", ""1 egg""]","[""Mix."", ""Fry.""]",'
        'example/p,Gathered,"[""flour"", ""egg""]"\n'
    )
    put("recipes/ok/nlg.csv", (header + row).encode(), {"expect": "ok", "imported": 1})
    broken = header + row + '"Broken quote,"[""x""],"[""y""]",l,s,"[]"\n' + row.replace("Pancakes", "Waffles")
    # The broken row is skipped and counted; the rows around it import.
    put("recipes/ok/broken_quoting.csv", broken.encode(), {"expect": "ok", "imported": 2, "skipped": 1})
    put(
        "recipes/ok/latin1.csv",
        (header + row.replace("Pancakes", "Crêpes")).encode("latin-1"),
        {"expect": "ok", "imported": 1},
    )
    layer1 = [
        {
            "id": "c0ffee01",
            "title": "Corpus Rice",
            "ingredients": [{"text": "1 cup rice"}],
            "instructions": [{"text": "Boil."}],
            "partition": "train",
            "url": "x",
        }
    ]
    put("recipes/ok/layer1.json", json.dumps(layer1).encode(), {"expect": "ok", "imported": 1})
    put(
        "recipes/bad/layer1_wrong_shape.json",
        json.dumps({"id": 1, "title": ["x"]}).encode(),
        err("layer1_wrong_shape.json"),
    )


def main():
    for sub in ("images", "packs", "recipes"):
        shutil.rmtree(ROOT / sub, ignore_errors=True)
    images()
    packs()
    recipes()
    (ROOT / "expected.json").write_text(json.dumps(dict(sorted(expected.items())), indent=1, ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"wrote {len(expected)} corpus entries under {ROOT} ({size} bytes)")


if __name__ == "__main__":
    main()
