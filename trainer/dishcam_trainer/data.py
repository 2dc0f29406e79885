"""Datasets in their published on-disk formats: Food-101, UPMC Food-101 and Recipe1M.

Every dataset pairs images with labels or texts by key (image id, image name, recipe id), never by
the order in which files are listed, and reports a missing file by its path.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from .utils import stable_fraction

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class DatasetError(Exception):
    """A dataset file is missing or malformed; the message names the file and the fix."""


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: {what} not found; {fix}")
    return path


def load_rgb(path: str | Path) -> Image.Image:
    """Opens an image the way dishcam's runtime does: EXIF orientation applied, RGB."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


@dataclass
class Sample:
    """One labelled example: an image path and/or a text, and a class index (-1 when unlabelled)."""

    key: str
    image: Path | None
    text: str | None
    label: int


def holdout_split(samples: Sequence[Sample], fraction: float, seed: int = 0) -> tuple[list, list]:
    """Splits into (train, val) by a hash of each sample's key: stable across file order and runs."""
    train, val = [], []
    for s in samples:
        (val if stable_fraction(s.key, seed) < fraction else train).append(s)
    return train, val


# ---------------------------------------------------------------------------------------------
# Food-101


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def food101_samples(
    root: str | Path,
    split: str = "train",
    images: str | Path | None = None,
    missing: str = "error",
) -> tuple[list[Sample], list[str]]:
    """Food-101: `root/meta/{classes,train,test}.txt` and images at `images/<class>/<id>.jpg`.

    `images` defaults to `root/images` (the official archive). With `missing="skip"`, ids whose
    image is absent are dropped and the class list shrinks to classes with at least one image
    (for partial copies such as a 10-class subset); with `missing="error"` the first absent
    image is reported.
    Returns the samples and the class names (index order).
    """
    root = Path(root)
    meta = root / "meta"
    classes = read_lines(_need(meta / "classes.txt", "Food-101 class list", "pass the Food-101 root (it holds meta/)"))
    split_file = _need(meta / f"{split}.txt", f"Food-101 split '{split}'", "use --split train or test")
    ids = read_lines(split_file)
    image_dir = Path(images) if images is not None else root / "images"
    _need(image_dir, "Food-101 image folder", "pass --images DIR holding <class>/<id>.jpg")
    samples: list[Sample] = []
    absent = []
    for ident in ids:
        cls = ident.split("/", 1)[0]
        path = image_dir / f"{ident}.jpg"
        if not path.is_file():
            absent.append(path)
            continue
        samples.append(Sample(key=ident, image=path, text=None, label=-1))
    if absent and missing == "error":
        raise DatasetError(
            f"{absent[0]}: image listed in {split_file} not found ({len(absent)} of {len(ids)} missing); "
            "pass the full image folder, or --missing skip to train on the images present"
        )
    if missing == "skip":
        present = {s.key.split("/", 1)[0] for s in samples}
        classes = [c for c in classes if c in present]
    index = {c: i for i, c in enumerate(classes)}
    for s in samples:
        cls = s.key.split("/", 1)[0]
        if cls not in index:
            raise DatasetError(f"{split_file}: id '{s.key}' names class '{cls}' missing from meta/classes.txt")
        s.label = index[cls]
    if not samples:
        raise DatasetError(f"{image_dir}: none of the {len(ids)} images of {split_file} are there")
    return samples, classes


# ---------------------------------------------------------------------------------------------
# UPMC Food-101


def read_upmc_titles(path: Path) -> dict[str, tuple[str, str]]:
    """`image_name,page_title,label` rows (no header) -> {image_name: (title, label)}."""
    out: dict[str, tuple[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) < 3:
                raise DatasetError(f"{path}:{n}: expected image_name,page_title,label, got {len(row)} fields")
            name, label = row[0], row[-1]
            title = ",".join(row[1:-1])
            out.setdefault(name, (title, label))
    return out


def upmc_samples(
    root: str | Path,
    split: str = "train",
    classes: Sequence[str] | None = None,
    text_only: bool = False,
    titles: str | Path | None = None,
) -> tuple[list[Sample], list[str]]:
    """UPMC Food-101: `texts/<split>_titles.csv` (or `<split>_titles.csv`) and
    `images/<split>/<label>/<image_name>`.

    Image and title are joined on `image_name`; an image without a title or a title without an
    image is dropped and counted (an error if nothing pairs). `text_only` reads only the titles
    (e.g. the dev copy `titles_dev.csv`, passed with `titles`).
    """
    root = Path(root)
    if titles is not None:
        csv_path = _need(Path(titles), "UPMC titles CSV", "pass --titles FILE")
    else:
        candidates = [root / "texts" / f"{split}_titles.csv", root / f"{split}_titles.csv"]
        csv_path = next((p for p in candidates if p.is_file()), None)
        if csv_path is None:
            raise DatasetError(
                f"{candidates[0]}: UPMC titles not found (also looked for {candidates[1]}); "
                "pass the UPMC Food-101 root holding texts/ and images/"
            )
    rows = read_upmc_titles(csv_path)
    labels = sorted({lab for _, lab in rows.values()}) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(labels)}
    samples = []
    if text_only:
        for name in sorted(rows):
            title, lab = rows[name]
            if lab in index:
                samples.append(Sample(key=name, image=None, text=title, label=index[lab]))
        return samples, labels
    image_dir = _need(root / "images" / split, f"UPMC image folder for '{split}'", "pass the UPMC Food-101 root")
    on_disk: dict[str, Path] = {}
    for p in image_dir.rglob("*"):
        if p.suffix.lower() in IMAGE_EXTS:
            on_disk.setdefault(p.name, p)
    for name in sorted(set(rows) & set(on_disk)):
        title, lab = rows[name]
        if lab not in index:
            continue
        samples.append(Sample(key=name, image=on_disk[name], text=title, label=index[lab]))
    if not samples:
        raise DatasetError(
            f"{csv_path}: no row's image_name matches a file under {image_dir} "
            f"({len(rows)} titles, {len(on_disk)} images)"
        )
    return samples, labels


# ---------------------------------------------------------------------------------------------
# Recipe1M


@dataclass
class Recipe:
    id: str
    title: str
    ingredients: list[str]
    instructions: list[str]
    partition: str
    images: list[Path] = field(default_factory=list)

    def text(self) -> str:
        """The deployable text tower's input: "title. ingredients. instructions"."""
        parts = [self.title.strip().rstrip(".")]
        parts.append(", ".join(i.strip() for i in self.ingredients if i.strip()))
        parts.append(" ".join(s.strip() for s in self.instructions if s.strip()))
        return ". ".join(p for p in parts if p)


def _read_json(path: Path, what: str):
    _need(path, what, "pass the Recipe1M root holding layer1.json and layer2.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e


def recipe_image_path(images_root: Path, partition: str, image_id: str) -> Path:
    """Recipe1M image layout: `<root>/<partition>/a/b/c/d/<image_id>` (first four characters);
    falls back to `<root>/a/b/c/d/<image_id>` when the partition folder does not exist."""
    sub = Path(*image_id[:4]) / image_id
    p = images_root / partition / sub
    if p.exists() or (images_root / partition).is_dir():
        return p
    return images_root / sub


def recipe1m_recipes(
    root: str | Path,
    split: str | None = "train",
    images: str | Path | None = None,
    require_images: bool = True,
) -> list[Recipe]:
    """Recipe1M: `layer1.json` (recipes) joined with `layer2.json` (their images) on the recipe id.

    Images are looked up under `images` (default `root/images`); recipes whose images are all
    absent are dropped when `require_images`, and it is an error if none is left.
    """
    root = Path(root)
    layer1 = _read_json(root / "layer1.json", "Recipe1M layer1.json (recipes)")
    layer2 = _read_json(root / "layer2.json", "Recipe1M layer2.json (images)")
    images_root = Path(images) if images is not None else root / "images"
    by_id = {}
    for entry in layer2:
        by_id.setdefault(entry["id"], []).extend(im["id"] for im in entry.get("images", []))
    out = []
    for r in layer1:
        if split is not None and r.get("partition") != split:
            continue
        title = r["title"]["text"] if isinstance(r.get("title"), dict) else r.get("title", "")
        rec = Recipe(
            id=r["id"],
            title=title,
            ingredients=[i["text"] for i in r.get("ingredients", [])],
            instructions=[i["text"] for i in r.get("instructions", [])],
            partition=r.get("partition", ""),
        )
        if require_images:
            rec.images = [
                p
                for p in (recipe_image_path(images_root, rec.partition, i) for i in by_id.get(rec.id, []))
                if p.is_file()
            ]
            if not rec.images:
                continue
        out.append(rec)
    if not out:
        where = f"images under {images_root}" if require_images else "recipes"
        raise DatasetError(
            f"{root / 'layer1.json'}: no '{split}' recipe with {where} "
            f"({len(layer1)} recipes, {len(by_id)} with image entries in layer2.json)"
        )
    return out


# ---------------------------------------------------------------------------------------------
# torch Datasets


class ClassificationDataset(Dataset):
    """Samples -> dict(image=tensor?, text=str?, label=int, key=str)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None, use_image: bool, use_text: bool):
        self.samples = list(samples)
        self.transform = transform
        self.use_image = use_image
        self.use_text = use_text

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        item = {"label": s.label, "key": s.key, "index": i}
        if self.use_image:
            if s.image is None:
                raise DatasetError(f"sample '{s.key}' has no image but the model has an image tower")
            item["image"] = self.transform(load_rgb(s.image))
        if self.use_text:
            if s.text is None:
                raise DatasetError(f"sample '{s.key}' has no text but the model has a text tower")
            item["text"] = s.text
        return item


class RecipeImageDataset(Dataset):
    """Recipe1M pairs: one image of the recipe (random in training, first in evaluation)."""

    def __init__(self, recipes: Sequence[Recipe], transform: Callable, train: bool, seed: int = 0):
        self.recipes = list(recipes)
        self.transform = transform
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.recipes)

    def __getitem__(self, i: int) -> dict:
        r = self.recipes[i]
        if self.train and len(r.images) > 1:
            path = random.Random(f"{self.seed}:{self.epoch}:{r.id}").choice(r.images)
        else:
            path = r.images[0]
        return {"image": self.transform(load_rgb(path)), "recipe": r, "key": r.id, "index": i}


def collate(batch: list[dict]) -> dict:
    """Stacks tensors and ints; keeps strings and recipes as lists."""
    out = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], int):
            out[k] = torch.tensor(vals)
        else:
            out[k] = vals
    return out
