import itertools
import math

import torch
import torch.nn.functional as F

from dishcam_trainer import losses as L


def _pairs(seed=0, n=5, d=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_smoothed_cross_entropy_matches_torch():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(
        L.smoothed_cross_entropy(logits, y, 0.1), F.cross_entropy(logits, y, label_smoothing=0.1)
    )
    soft = F.one_hot(y, 4).float()
    torch.testing.assert_close(L.smoothed_cross_entropy(logits, soft, 0.0), F.cross_entropy(logits, y))


def _rank_loss_by_hand(scores, labels):
    terms = [
        math.exp(scores[i] - scores[j]) for i in range(len(labels)) for j in range(len(labels)) if labels[i] < labels[j]
    ]
    return math.log(1 + sum(terms))


def test_cosent_by_hand():
    a, b = _pairs(1)
    y = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.2])
    cos = [float(torch.dot(a[i], b[i]) / (a[i].norm() * b[i].norm())) for i in range(5)]
    want = _rank_loss_by_hand([20 * c for c in cos], y.tolist())
    assert abs(L.cosent_loss(a, b, y, 20.0).item() - want) < 1e-4 * max(1, want)


def test_angle_loss_by_hand_in_complex_numbers():
    a, b = _pairs(2, d=6)
    y = torch.tensor([0.0, 1.0, 0.3, 0.7, 1.0])
    scores = []
    for i in range(5):
        za = [complex(a[i, k], a[i, k + 3]) for k in range(3)]
        zb = [complex(b[i, k], b[i, k + 3]) for k in range(3)]
        na = math.sqrt(sum(abs(z) ** 2 for z in za))
        nb = math.sqrt(sum(abs(z) ** 2 for z in zb))
        # AnglE: (a / b) per dimension with the squared norm of the whole b as denominator,
        # rescaled by |b| / |a|; real and imaginary parts summed.
        q = [x * y_.conjugate() / nb**2 / (na / nb) for x, y_ in zip(za, zb, strict=True)]
        scores.append(abs(sum(z.real + z.imag for z in q)) * 20.0)
    want = _rank_loss_by_hand(scores, y.tolist())
    got = L.angle_loss(a, b, y, 20.0).item()
    assert abs(got - want) < 1e-4 * max(1, want), (got, want)


def test_in_batch_negatives_by_hand():
    a, b = _pairs(3, n=4)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0])
    x = [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]]
    total = 0.0
    for r in range(8):
        if y[r // 2] <= 0:
            continue
        sims = [20 * float(F.cosine_similarity(x[r], x[c], dim=0)) if c != r else -math.inf for c in range(8)]
        lse = math.log(sum(math.exp(s) for s in sims))
        total += lse - sims[r ^ 1]
    want = total / 8
    assert abs(L.in_batch_negative_loss(a, b, y, 20.0).item() - want) < 1e-4 * max(1, want)


def test_angle_objective_weights_combine_the_terms():
    a, b = _pairs(4)
    y = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9])
    w = L.AngleWeights(cosine_w=0.5, ibn_w=2.0, angle_w=3.0)
    want = 0.5 * L.cosent_loss(a, b, y) + 2.0 * L.in_batch_negative_loss(a, b, y) + 3.0 * L.angle_loss(a, b, y)
    torch.testing.assert_close(L.angle_objective(a, b, y, w), want)
    assert L.AngleWeights() == L.AngleWeights(0.0, 20.0, 1.0, 20.0, 20.0, 20.0, "sum")


def test_triplet_loss_by_hand():
    img, rec = (F.normalize(t, dim=-1) for t in _pairs(5, n=4))
    s = img @ rec.T
    terms = []
    for i, j in itertools.product(range(4), range(4)):
        if i != j:
            terms.append(max(0.0, 0.3 - s[i, i].item() + s[i, j].item()))  # image -> recipe
            terms.append(max(0.0, 0.3 - s[i, i].item() + s[j, i].item()))  # recipe -> image
    want = sum(terms) / len(terms)
    assert abs(L.triplet_loss(img, rec, 0.3).item() - want) < 1e-6
    # A perfect, well-separated batch costs nothing.
    eye = torch.eye(4)
    assert L.triplet_loss(eye, eye, 0.3).item() == 0.0


def test_info_nce_is_symmetric_cross_entropy():
    img, rec = (F.normalize(t, dim=-1) for t in _pairs(6, n=5))
    t = torch.arange(5)
    want = (F.cross_entropy(img @ rec.T / 0.1, t) + F.cross_entropy(rec @ img.T / 0.1, t)) / 2
    torch.testing.assert_close(L.info_nce_loss(img, rec, 0.1), want)


def test_recipe_component_loss_trains_the_maps():
    torch.manual_seed(0)
    comps = {k: torch.randn(6, 8) for k in ("title", "ingredients", "instructions")}
    maps = torch.nn.ModuleDict({f"{a}->{b}": torch.nn.Linear(8, 8) for a in comps for b in comps if a != b})
    opt = torch.optim.Adam(maps.parameters(), lr=0.05)
    first = L.recipe_component_loss(comps, maps).item()
    for _ in range(100):
        loss = L.recipe_component_loss(comps, maps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
