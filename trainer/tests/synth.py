"""Tiny synthetic datasets in the real on-disk formats (no real images or texts)."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["apple_pie", "beef_tartare", "caesar_salad"]
COLOURS = {"apple_pie": (200, 60, 40), "beef_tartare": (50, 170, 60), "caesar_salad": (40, 70, 200)}
WORDS = {
    "apple_pie": "apple cinnamon crust",
    "beef_tartare": "raw beef capers",
    "caesar_salad": "lettuce croutons dressing",
}


def photo(path: Path, colour, seed: int, size=(48, 40)) -> None:
    """A noisy colour field with a bright square: separable by colour, not trivially constant."""
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour, np.float32) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    x, y = rng.integers(0, size[0] - 10), rng.integers(0, size[1] - 10)
    a[y : y + 10, x : x + 10] = 255 - a[y : y + 10, x : x + 10]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path, quality=95)


def food101(root: Path, per_class: int = 12, test_per_class: int = 3) -> Path:
    meta = root / "meta"
    meta.mkdir(parents=True)
    (meta / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    train, test = [], []
    n = 0
    for c in CLASSES:
        for i in range(per_class + test_per_class):
            ident = f"{c}/{100000 + n}"
            n += 1
            photo(root / "images" / f"{ident}.jpg", COLOURS[c], n)
            (train if i < per_class else test).append(ident)
    # Split files list ids in an order unrelated to the folders (pairing must be by key).
    random.Random(0).shuffle(train)
    (meta / "train.txt").write_text("\n".join(train) + "\n")
    (meta / "test.txt").write_text("\n".join(test) + "\n")
    return root


def upmc(root: Path, per_class: int = 12) -> Path:
    rows = []
    n = 0
    for c in CLASSES:
        for i in range(per_class):
            name = f"{c}_{i}.jpg"
            n += 1
            photo(root / "images" / "train" / c / name, COLOURS[c], 1000 + n)
            rows.append([name, f"Best {WORDS[c]} recipe, number {i} | blog", c])
    rows.append(["orphan_title.jpg", "a title whose image is absent", CLASSES[0]])
    photo(root / "images" / "train" / CLASSES[0] / "orphan_image.jpg", COLOURS[CLASSES[0]], 7)
    random.Random(1).shuffle(rows)
    (root / "texts").mkdir(parents=True)
    with open(root / "texts" / "train_titles.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def recipe1m(root: Path, recipes: int = 24, partition_of=None) -> Path:
    layer1, layer2 = [], []
    for i in range(recipes):
        c = CLASSES[i % len(CLASSES)]
        rid = hashlib.sha256(f"r{i}".encode()).hexdigest()[:10]
        part = partition_of(i) if partition_of else "train"
        layer1.append(
            {
                "id": rid,
                "title": f"{WORDS[c]} number {i}",
                "ingredients": [{"text": w} for w in WORDS[c].split()] + [{"text": f"{i} cups water"}],
                "instructions": [{"text": f"Mix the {WORDS[c]}."}, {"text": "Bake and serve."}],
                "partition": part,
                "url": "",
            }
        )
        images = []
        for j in range(2):
            iid = hashlib.sha256(f"i{i}-{j}".encode()).hexdigest()[:10] + ".jpg"
            photo(root / "images" / part / Path(*iid[:4]) / iid, COLOURS[c], 5000 + 2 * i + j)
            images.append({"id": iid, "url": ""})
        layer2.append({"id": rid, "images": images})
    layer2.reverse()  # a different order from layer1: pairing is by recipe id
    layer2.append({"id": "ffffffffff", "images": [{"id": "0000000000.jpg", "url": ""}]})
    (root / "layer1.json").write_text(json.dumps(layer1))
    (root / "layer2.json").write_text(json.dumps(layer2))
    return root
