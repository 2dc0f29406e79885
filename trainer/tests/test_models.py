import pytest
import torch
import torch.nn.functional as F

from dishcam_trainer import models as M
from dishcam_trainer.data import Recipe


@pytest.mark.parametrize(
    "name,dim,size",
    [("tiny_efficientnet_v2", 64, 64), ("tiny_efficientnet_lite0", None, 64), ("tiny_clip_vit", 24, 32)],
)
def test_image_towers_embed(name, dim, size):
    torch.manual_seed(0)
    t = M.build_image_tower(name).eval()
    assert t.spec.size == size
    out = t(torch.randn(2, 3, size, size))
    assert out.shape == (2, t.dim) and (dim is None or t.dim == dim)
    assert torch.isfinite(out).all()


def test_full_size_architectures_build_without_weights():
    # Shapes of the real towers (no download: weights are not requested).
    t = M.build_image_tower("efficientnet_v2_s")
    assert t.dim == 1280 and t.spec.size == 384 and t.spec.mean == M.IMAGENET_MEAN
    lite = M.build_image_tower("efficientnet_lite0")
    assert lite.dim == 1280 and lite.spec.crop_fraction == 0.875 and lite.spec.range == 255.0


def test_text_pooling_cls_and_mean():
    tok = M.train_wordpiece(["apple pie with cinnamon", "beef tartare with capers"] * 5, 120)
    batch = M.encode_texts(tok, ["apple pie", "beef tartare with capers and more"], 16)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    torch.manual_seed(0)
    cls = M.build_text_tower("tiny_bert", "cls", normalize=False, vocab_size=tok.get_vocab_size()).eval()
    mean = M.TextTower(cls.encoder, "mean", False, {})
    h = cls.encoder(**batch).last_hidden_state
    torch.testing.assert_close(cls(**batch), h[:, 0])
    m = batch["attention_mask"][0].bool()
    torch.testing.assert_close(mean(**batch)[0], h[0, m].mean(0))
    normed = M.TextTower(cls.encoder, "mean", True, {})
    torch.testing.assert_close(normed(**batch).norm(dim=-1), torch.ones(2))
    assert M.default_pooling("WhereIsAI/UAE-Large-V1") == "cls"
    assert M.default_pooling("sentence-transformers/all-MiniLM-L6-v2") == "mean"


def test_encode_texts_ignores_padding_stored_in_the_tokenizer():
    tok = M.train_wordpiece(["apple pie with cinnamon"] * 5, 80)
    plain = M.encode_texts(tok, ["apple pie"], 16)
    tok.enable_padding(length=12, pad_id=0, pad_token="[PAD]")  # as many hub tokenizer.json files do
    padded = M.encode_texts(tok, ["apple pie"], 16)
    assert plain["input_ids"].tolist() == padded["input_ids"].tolist()
    assert padded["attention_mask"].sum() == len(padded["input_ids"][0]) == 4  # [CLS] apple pie [SEP]


def test_heads_normalise_parts_and_late_fusion_averages_log_probs():
    torch.manual_seed(0)
    x = torch.randn(4, 5 + 3)
    early = M.ClassifierHead("early-fusion", [5, 3], 6)
    # Scaling either part does not change the output: each is L2-normalised inside the head.
    x2 = torch.cat([x[:, :5] * 7, x[:, 5:] * 0.1], dim=1)
    torch.testing.assert_close(early(x), early(x2))
    late = M.ClassifierHead("late-fusion", [5, 3], 6, late_weight=0.7)
    a, b = late(x, branches=True)
    torch.testing.assert_close(late(x), 0.7 * F.log_softmax(a, -1) + 0.3 * F.log_softmax(b, -1))
    with pytest.raises(ValueError):
        M.ClassifierHead("early-fusion", [5], 6)


def _recipe(title, ingr, instr):
    return Recipe("x", title, ingr, instr, "train")


def test_hierarchical_encoder_shapes_and_padding_invariance():
    texts = ["apple pie", "two apples", "bake it well", "flour"]
    tok = M.train_wordpiece(texts * 3, 80)
    torch.manual_seed(0)
    enc = M.HierarchicalRecipeEncoder(tok.get_vocab_size(), dim=16, heads=2, layers=1, out_dim=12, max_tokens=16).eval()
    short = _recipe("apple pie", ["two apples"], ["bake it well"])
    long = _recipe("tart", ["flour", "two apples", "flour"], ["bake it well", "bake", "serve it"])
    alone = M.encode_recipes_hier(tok, [short])
    both = M.encode_recipes_hier(tok, [short, long])
    assert both["ingredients"].shape[:2] == (2, 3)
    e1, c1 = enc(**alone)
    e2, c2 = enc(**both)
    assert e2.shape == (2, 12) and set(c2) == {"title", "ingredients", "instructions"}
    # Padding added for a longer recipe in the batch does not change the short recipe's embedding.
    torch.testing.assert_close(e1[0], e2[0], atol=1e-5, rtol=1e-5)


def test_retrieval_model_outputs_unit_vectors():
    tok = M.train_wordpiece(["apple pie", "two apples"] * 3, 80)
    torch.manual_seed(0)
    image = M.build_image_tower("tiny_clip_vit")
    text = M.build_text_tower("tiny_bert", vocab_size=tok.get_vocab_size(), normalize=False)
    model = M.RetrievalModel(image, text, "text", 8).eval()
    img, (rec, comps) = model(torch.randn(3, 3, 32, 32), M.encode_texts(tok, ["apple pie", "two", "x"], 16))
    assert comps is None
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(rec.norm(dim=-1), torch.ones(3))
