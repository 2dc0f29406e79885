"""Evaluation as the papers report it: accuracy/top-k; retrieval medR and R@K over bags of pairs."""

from __future__ import annotations

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """How many rows have their target among the k highest scores, for each k."""
    out = {}
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices
    hit = top == target[:, None]
    for k in ks:
        out[k] = int(hit[:, : min(k, kmax)].any(-1).sum())
    return out


def ranks(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each query's own key (row i of `keys`) by cosine distance: 1 + the number of keys
    strictly closer than it (ties resolve in the query's favour)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(min=1e-12)
    k = keys / np.linalg.norm(keys, axis=1, keepdims=True).clip(min=1e-12)
    dist = 1.0 - q.astype(np.float64) @ k.astype(np.float64).T
    own = np.diag(dist)
    return 1 + (dist < own[:, None]).sum(axis=1)


def rank_summary(r: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    out = {"medR": float(np.median(r))}
    for k in ks:
        out[f"R@{k}"] = float((r <= k).mean() * 100.0)
    return out


def retrieval_metrics(
    img: np.ndarray, rec: np.ndarray, bag_size: int = 1000, bags: int = 10, seed: int = 0
) -> dict[str, float]:
    """medR and R@1/5/10 (percent) in both directions (image->recipe `i2r`, recipe->image `r2i`),
    averaged over `bags` random bags of `bag_size` pairs (the Recipe1M protocol). With fewer
    pairs than `bag_size`, one bag of all pairs is used and `bag_size` reports the real size."""
    n = img.shape[0]
    if img.shape != rec.shape:
        raise ValueError(f"image and recipe embeddings differ in shape: {img.shape} vs {rec.shape}")
    rng = np.random.default_rng(seed)
    if n <= bag_size:
        idx_sets = [np.arange(n)]
    else:
        idx_sets = [rng.choice(n, size=bag_size, replace=False) for _ in range(bags)]
    acc: dict[str, list[float]] = {}
    for idx in idx_sets:
        for name, (a, b) in {"i2r": (img[idx], rec[idx]), "r2i": (rec[idx], img[idx])}.items():
            for k, v in rank_summary(ranks(a, b)).items():
                acc.setdefault(f"{name}_{k}", []).append(v)
    out = {k: float(np.mean(v)) for k, v in acc.items()}
    out["bag_size"] = float(len(idx_sets[0]))
    out["bags"] = float(len(idx_sets))
    return out
