"""Seeds, atomic files, checkpoints, CSV logs and config files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and PyTorch and asks PyTorch for deterministic kernels where it can."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed used for one epoch on one rank, so a resumed run replays the same batches."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**31)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, fsyncs it and renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temporary file and a rename: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint written by this trainer (plain tensors, dicts, lists and strings)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such checkpoint; train first (`dishcam-train fusion|retrieval --out DIR`) "
            "and pass DIR/last.pt or DIR/best.pt"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


class CsvLog:
    """Appends one row per call to a CSV file; the header comes from the first row's keys."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.fields: list[str] | None = None
        if enabled and self.path.exists():
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            self.fields = header

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def load_config(path: str | os.PathLike) -> dict:
    """Reads a YAML (`.yaml`/`.yml`) or TOML (`.toml`) config; keys are flag names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"{path}: config must end in .yaml, .yml, .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config must be a table/mapping of flag names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_fraction(key: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed by `key` alone: splits made with it do not depend on file order."""
    d = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(d[:8], "big") / 2**64
