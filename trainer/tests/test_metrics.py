import numpy as np
import pytest
import torch

from dishcam_trainer.metrics import rank_summary, ranks, retrieval_metrics, topk_correct


def test_ranks_by_hand_with_ties():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    k = np.array([[1.0, 0.1], [1.0, 0.0], [2.0, 2.0]])
    # query 0: own key at cos(0.0996 rad) ~ 0.995; key 1 is exactly q0 (closer) -> rank 2
    # query 1: own key [1, 0] is orthogonal; key 0 (cos .0995) and key 2 (cos .707) are closer -> rank 3
    # query 2: own key is parallel (distance 0); nothing strictly closer -> rank 1
    assert ranks(q, k).tolist() == [2, 3, 1]
    # A tie with the own key does not count against the query: rank = 1 + strictly closer.
    tie = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert ranks(tie, tie).tolist() == [1, 1]


def test_rank_summary_and_bags():
    r = np.array([1, 2, 3, 11, 1, 6])
    s = rank_summary(r)
    assert s == pytest.approx({"medR": 2.5, "R@1": 100 * 2 / 6, "R@5": 100 * 4 / 6, "R@10": 100 * 5 / 6})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    m = retrieval_metrics(x, x, bag_size=1000)
    assert m["bag_size"] == 30 and m["bags"] == 1
    assert m["i2r_medR"] == 1 and m["r2i_R@1"] == 100.0
    m = retrieval_metrics(x, rng.normal(size=(30, 4)), bag_size=10, bags=10, seed=1)
    assert m["bag_size"] == 10 and m["bags"] == 10
    assert 1 <= m["i2r_medR"] <= 10 and 0 <= m["i2r_R@1"] <= 100 and m["i2r_R@10"] == 100.0


def test_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4]])
    y = torch.tensor([1, 2, 0])
    assert topk_correct(logits, y, (1, 2, 5)) == {1: 1, 2: 2, 5: 3}
