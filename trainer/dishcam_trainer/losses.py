"""Training objectives.

* `smoothed_cross_entropy`: CE with label smoothing, on class indices or soft (mixup) targets.
* AnglE (Li & Li, 2023): CoSENT cosine ranking loss, in-batch-negative contrastive loss and the
  angle loss in complex space. Defaults are those of the AnglE code's `AngleLoss`
  (`angle_emb`, the version released with the paper): cosine_w=0, ibn_w=20, angle_w=1,
  cosine_tau=20, ibn_tau=20, angle_tau=20, pooling "sum". (Later releases changed them to
  ibn_w=1, angle_w=0.02 and added a `cln_w` term; pass them as flags to follow those.)
* H-T (Salvador et al., 2021): bidirectional triplet loss over all in-batch negatives (margin
  0.3), an InfoNCE alternative, and the self-supervised recipe component loss. Negatives are the
  global batch: keys are gathered across ranks with `gather_with_grad`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dist import gather_with_grad, global_offset


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing. `target` is [B] class indices or [B, C] soft targets."""
    logp = F.log_softmax(logits, dim=-1)
    c = logits.shape[-1]
    if target.dim() == 1:
        target = F.one_hot(target, c).to(logp.dtype)
    target = target * (1 - smoothing) + smoothing / c
    return -(target * logp).sum(-1).mean()


# ---------------------------------------------------------------------------------------------
# AnglE


def _rank_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(1 + sum over pairs (i, j) with labels[i] < labels[j] of exp(scores[i] - scores[j]))."""
    worse = labels[:, None] < labels[None, :]
    diff = scores[:, None] - scores[None, :]
    diff = diff.masked_fill(~worse, float("-inf")).reshape(-1)
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)


def cosent_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """CoSENT: pairs (a_i, b_i) with higher labels must have higher cosine similarity."""
    return _rank_loss(F.cosine_similarity(a, b, dim=-1) * tau, labels)


def angle_loss(
    a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, tau: float = 20.0, pooling: str = "sum"
) -> torch.Tensor:
    """AnglE's angle objective: each vector's halves are the real and imaginary parts of a complex
    vector; the quotient a/b (scaled by |b|/|a|) is pooled into a score that, like the cosine in
    CoSENT, must rank pairs by label."""
    ar, ai = torch.chunk(a, 2, dim=-1)
    br, bi = torch.chunk(b, 2, dim=-1)
    z = (br**2 + bi**2).sum(-1, keepdim=True)
    re = (ar * br + ai * bi) / z
    im = (ai * br - ar * bi) / z
    ratio = (ar**2 + ai**2).sum(-1, keepdim=True).sqrt() / z.sqrt()
    q = torch.cat([re / ratio, im / ratio], dim=-1)
    pooled = q.sum(-1) if pooling == "sum" else q.mean(-1)
    return _rank_loss(pooled.abs() * tau, labels)


def in_batch_negative_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, tau: float = 20.0) -> torch.Tensor:
    """Contrastive loss over the 2N texts of N pairs: each text of a positive pair (label > 0) must
    pick its partner among all other 2N - 1 texts; texts of negative pairs add zero. Mean over 2N."""
    n = a.shape[0]
    x = F.normalize(torch.stack([a, b], dim=1).reshape(2 * n, -1), dim=-1)
    sims = (x @ x.T) * tau
    sims = sims.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=x.device), float("-inf"))
    partner = torch.arange(2 * n, device=x.device) ^ 1
    pos = (labels > 0).repeat_interleave(2)
    nll = -F.log_softmax(sims, dim=-1).gather(1, partner[:, None]).squeeze(1)
    return torch.where(pos, nll, torch.zeros_like(nll)).mean()


@dataclass
class AngleWeights:
    cosine_w: float = 0.0
    ibn_w: float = 20.0
    angle_w: float = 1.0
    cosine_tau: float = 20.0
    ibn_tau: float = 20.0
    angle_tau: float = 20.0
    pooling: str = "sum"


def angle_objective(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, w: AngleWeights | None = None):
    """AnglE = cosine_w * CoSENT + ibn_w * in-batch negatives + angle_w * angle loss."""
    w = w or AngleWeights()
    loss = a.new_zeros(())
    if w.cosine_w:
        loss = loss + w.cosine_w * cosent_loss(a, b, labels, w.cosine_tau)
    if w.ibn_w:
        loss = loss + w.ibn_w * in_batch_negative_loss(a, b, labels, w.ibn_tau)
    if w.angle_w:
        loss = loss + w.angle_w * angle_loss(a, b, labels, w.angle_tau, w.pooling)
    return loss


# ---------------------------------------------------------------------------------------------
# Cross-modal retrieval


def _triplet_rows(q: torch.Tensor, keys: torch.Tensor, offset: int, margin: float) -> torch.Tensor:
    """Sum over queries and all their negatives of max(0, margin - s(q, k+) + s(q, k-)); also
    returns how many (query, negative) terms there were."""
    sims = q @ keys.T
    idx = torch.arange(q.shape[0], device=q.device) + offset
    pos = sims.gather(1, idx[:, None])
    hinge = (margin - pos + sims).clamp(min=0)
    neg = torch.ones_like(sims, dtype=torch.bool)
    neg[torch.arange(q.shape[0]), idx] = False
    return hinge[neg].sum(), neg.sum()


def triplet_loss(img: torch.Tensor, rec: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """H-T's bidirectional triplet loss with every in-batch negative, on L2-normalised embeddings.

    Local rows (this rank's images/recipes) are queries; keys are the global batch gathered from
    all ranks. The loss is the mean hinge over all (query, negative) terms of both directions.
    """
    img_all, rec_all = gather_with_grad(img), gather_with_grad(rec)
    off = global_offset(img.shape[0])
    s1, n1 = _triplet_rows(img, rec_all, off, margin)
    s2, n2 = _triplet_rows(rec, img_all, off, margin)
    return (s1 + s2) / (n1 + n2).clamp(min=1)


def info_nce_loss(img: torch.Tensor, rec: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP-style) over the global batch."""
    img_all, rec_all = gather_with_grad(img), gather_with_grad(rec)
    off = global_offset(img.shape[0])
    target = torch.arange(img.shape[0], device=img.device) + off
    l1 = F.cross_entropy(img @ rec_all.T / temperature, target)
    l2 = F.cross_entropy(rec @ img_all.T / temperature, target)
    return (l1 + l2) / 2


def recipe_component_loss(comps: dict, maps, margin: float = 0.3) -> torch.Tensor:
    """H-T's self-supervised recipe loss: for every ordered pair of components (a, b), the mapped
    embedding g_ab(e_a) of a recipe must be closer to its own e_b than to other recipes' e_b
    (bidirectional triplet, all in-batch negatives, global batch)."""
    total = None
    pairs = [(a, b) for a, b in itertools.permutations(comps, 2) if f"{a}->{b}" in maps]
    for a, b in pairs:
        q = F.normalize(maps[f"{a}->{b}"](comps[a]), dim=-1)
        k = F.normalize(comps[b], dim=-1)
        term = triplet_loss(q, k, margin)
        total = term if total is None else total + term
    return total / max(len(pairs), 1)
