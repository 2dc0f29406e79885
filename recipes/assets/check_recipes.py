#!/usr/bin/env python3
"""Validate recipes/assets/food101.jsonl (Python 3 stdlib only).

Usage:
    python3 recipes/assets/check_recipes.py [CLASSES_TXT] [--recipes PATH]

CLASSES_TXT defaults to ../shared/data/food101/meta/classes.txt relative to
the repository root. If labels.txt sits beside it, each title must also contain
that class's display name (case- and accent-insensitive). The recipe file
defaults to food101.jsonl next to this script. Exits with status 1 and prints
every problem found if invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
DEFAULT_CLASSES = (
    REPO_ROOT / ".." / "shared" / "data" / "food101" / "meta" / "classes.txt"
)
DEFAULT_RECIPES = HERE / "food101.jsonl"

KEYS = [
    "id",
    "title",
    "food101_class",
    "cuisine",
    "tags",
    "servings",
    "total_time_minutes",
    "ingredients",
    "instructions",
    "source",
    "licence",
]

ALLOWED_TAGS = {
    "breakfast",
    "lunch",
    "dinner",
    "dessert",
    "snack",
    "appetizer",
    "side",
    "soup",
    "salad",
    "sandwich",
    "baking",
    "frying",
    "grilling",
    "vegetarian",
    "vegan",
    "seafood",
    "meat",
    "poultry",
    "pork",
    "beef",
    "noodles",
    "rice",
    "pasta",
    "street-food",
    "quick",
    "gluten-free",
}

INGREDIENTS_RANGE = (5, 16)
INSTRUCTIONS_RANGE = (4, 12)
TAGS_RANGE = (2, 6)


def fold(text: str) -> str:
    """Casefold and strip accents so 'Crème Brûlée' matches 'Creme brulee'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def load_lines(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value.strip() == value and value != ""


def pos_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_list(
    errors: list[str], where: str, name: str, value: object, bounds: tuple[int, int]
) -> None:
    lo, hi = bounds
    if not isinstance(value, list):
        errors.append(f"{where}: {name} is not a list")
        return
    if not lo <= len(value) <= hi:
        errors.append(f"{where}: {name} has {len(value)} items, expected {lo}-{hi}")
    for i, item in enumerate(value):
        if not nonempty_str(item):
            errors.append(f"{where}: {name}[{i}] is not a non-empty trimmed string")
    if len(set(value)) != len(value) and all(isinstance(v, str) for v in value):
        errors.append(f"{where}: {name} has duplicate items")


def check_recipe(
    errors: list[str],
    lineno: int,
    obj: object,
    expected_class: str | None,
    label: str | None,
) -> None:
    where = f"line {lineno}"
    if not isinstance(obj, dict):
        errors.append(f"{where}: not a JSON object")
        return
    if list(obj.keys()) != KEYS:
        errors.append(f"{where}: keys {list(obj.keys())} != expected {KEYS}")
    for key in ("id", "title", "food101_class", "cuisine", "source", "licence"):
        if not nonempty_str(obj.get(key)):
            errors.append(f"{where}: {key} is not a non-empty trimmed string")
    cls = obj.get("food101_class")
    if expected_class is not None and cls != expected_class:
        errors.append(f"{where}: food101_class {cls!r}, expected {expected_class!r}")
    title = obj.get("title")
    if label is not None and isinstance(title, str) and fold(label) not in fold(title):
        errors.append(
            f"{where}: title {title!r} does not contain the dish name {label!r}"
        )
    if obj.get("id") != f"food101-{cls}":
        errors.append(f"{where}: id {obj.get('id')!r} != 'food101-' + food101_class")
    for key in ("servings", "total_time_minutes"):
        if not pos_int(obj.get(key)):
            errors.append(f"{where}: {key} is not a positive integer")
    tags = obj.get("tags")
    check_list(errors, where, "tags", tags, TAGS_RANGE)
    if isinstance(tags, list):
        bad = [t for t in tags if t not in ALLOWED_TAGS]
        if bad:
            errors.append(f"{where}: tags not in allowed list: {bad}")
        if "vegan" in tags and "vegetarian" not in tags:
            errors.append(f"{where}: tagged vegan but not vegetarian")
        meaty = {"meat", "poultry", "pork", "beef", "seafood"} & set(tags)
        if meaty and ({"vegan", "vegetarian"} & set(tags)):
            errors.append(f"{where}: tagged both {sorted(meaty)} and vegetarian/vegan")
    check_list(errors, where, "ingredients", obj.get("ingredients"), INGREDIENTS_RANGE)
    check_list(
        errors, where, "instructions", obj.get("instructions"), INSTRUCTIONS_RANGE
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "classes",
        nargs="?",
        type=Path,
        default=DEFAULT_CLASSES,
        help="path to Food-101 classes.txt",
    )
    parser.add_argument(
        "--recipes", type=Path, default=DEFAULT_RECIPES, help="path to food101.jsonl"
    )
    args = parser.parse_args(argv)

    try:
        classes = load_lines(args.classes)
    except OSError as exc:
        print(f"cannot read classes file: {exc}", file=sys.stderr)
        return 2
    # Optional: display names in labels.txt next to classes.txt (same order).
    labels_path = args.classes.with_name("labels.txt")
    labels: list[str] = []
    if labels_path.is_file():
        labels = load_lines(labels_path)
        if len(labels) != len(classes):
            print(
                f"warning: {labels_path} has {len(labels)} lines, ignoring it",
                file=sys.stderr,
            )
            labels = []
    try:
        raw = args.recipes.read_bytes()
    except OSError as exc:
        print(f"cannot read recipe file: {exc}", file=sys.stderr)
        return 2

    errors: list[str] = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        print(f"{args.recipes}: not valid UTF-8: {exc}", file=sys.stderr)
        return 1
    if text and not text.endswith("\n"):
        errors.append("file does not end with a newline")
    lines = text.splitlines()
    if len(lines) != len(classes):
        errors.append(f"{len(lines)} lines, expected {len(classes)} (one per class)")

    titles: dict[str, int] = {}
    seen_classes: list[str] = []
    for i, line in enumerate(lines):
        lineno = i + 1
        if not line.strip():
            errors.append(f"line {lineno}: blank line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: invalid JSON: {exc}")
            continue
        expected = classes[i] if i < len(classes) else None
        label = labels[i] if i < len(labels) else None
        check_recipe(errors, lineno, obj, expected, label)
        if isinstance(obj, dict):
            title = obj.get("title")
            if isinstance(title, str):
                key = title.casefold()
                if key in titles:
                    errors.append(
                        f"line {lineno}: duplicate title {title!r} (first on line {titles[key]})"
                    )
                titles.setdefault(key, lineno)
            seen_classes.append(str(obj.get("food101_class")))

    missing = sorted(set(classes) - set(seen_classes))
    extra = sorted(set(seen_classes) - set(classes))
    if missing:
        errors.append(f"missing classes: {missing}")
    if extra:
        errors.append(f"unknown classes: {extra}")

    if errors:
        for err in errors:
            print(err)
        print(f"FAIL: {len(errors)} problem(s) in {args.recipes}")
        return 1
    print(f"OK: {len(lines)} recipes, one per class, in class order ({args.recipes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
