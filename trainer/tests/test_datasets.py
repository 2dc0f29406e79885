import json

import numpy as np
import pytest
import synth
import torch

from dishcam_trainer import data as D
from dishcam_trainer.transforms import EvalTransform, PreprocessSpec


def test_food101_labels_come_from_ids_not_file_order(food_root):
    samples, classes = D.food101_samples(food_root, "train")
    assert classes == synth.CLASSES
    assert len(samples) == 3 * 12
    for s in samples:
        assert s.image.is_file()
        assert classes[s.label] == s.key.split("/")[0] == s.image.parent.name


def test_food101_missing_image_is_named(food_root, tmp_path):
    root = tmp_path / "f"
    (root / "meta").mkdir(parents=True)
    for f in ("classes.txt", "train.txt", "test.txt"):
        (root / "meta" / f).write_text((food_root / "meta" / f).read_text())
    (root / "images").symlink_to(food_root / "images")
    (root / "meta" / "train.txt").write_text("apple_pie/999\n" + (food_root / "meta" / "train.txt").read_text())
    with pytest.raises(D.DatasetError, match=r"apple_pie/999\.jpg.*1 of 37 missing"):
        D.food101_samples(root, "train")
    samples, classes = D.food101_samples(root, "train", missing="skip")
    assert len(samples) == 36 and classes == synth.CLASSES
    with pytest.raises(D.DatasetError, match=r"meta/classes.txt"):
        D.food101_samples(tmp_path / "nowhere", "train")


def test_food101_skip_keeps_only_present_classes(food_root, tmp_path):
    img = tmp_path / "img"
    (img / "beef_tartare").mkdir(parents=True)
    for p in (food_root / "images" / "beef_tartare").iterdir():
        (img / "beef_tartare" / p.name).symlink_to(p)
    samples, classes = D.food101_samples(food_root, "train", images=img, missing="skip")
    assert classes == ["beef_tartare"] and {s.label for s in samples} == {0} and len(samples) == 12


def test_upmc_pairs_title_and_image_by_name(upmc_root):
    samples, classes = D.upmc_samples(upmc_root, "train")
    assert classes == sorted(synth.CLASSES)
    assert len(samples) == 3 * 14  # the orphan title and the orphan image are dropped
    for s in samples:
        cls = classes[s.label]
        assert s.image.parent.name == cls and s.image.name == s.key
        assert synth.WORDS[cls] in s.text  # the title belongs to this very image
        idx = s.key.rsplit("_", 1)[1].split(".")[0]
        assert f"number {idx} " in s.text


def test_upmc_titles_only_and_commas_in_titles(tmp_path):
    csv_path = tmp_path / "titles_dev.csv"
    csv_path.write_text('a.jpg,"Pie, with apples",apple_pie\nb.jpg,Tartare,beef_tartare\n')
    samples, classes = D.upmc_samples(tmp_path, text_only=True, titles=csv_path)
    assert [(s.text, classes[s.label]) for s in samples] == [
        ("Pie, with apples", "apple_pie"),
        ("Tartare", "beef_tartare"),
    ]
    with pytest.raises(D.DatasetError, match="train_titles.csv"):
        D.upmc_samples(tmp_path / "none", "train")


def test_recipe1m_joins_layers_by_id_and_finds_images(recipe_root):
    recipes = D.recipe1m_recipes(recipe_root, "train")
    layer1 = {r["id"]: r for r in json.loads((recipe_root / "layer1.json").read_text())}
    assert len(recipes) == 24
    for r in recipes:
        assert r.title == layer1[r.id]["title"]
        assert len(r.images) == 2
        for p in r.images:
            assert p.parts[-6:-1] == ("train", *p.name[:4])
        assert r.text().startswith(r.title + ". ")
    assert len(D.recipe1m_recipes(recipe_root, "val")) == 6


def test_recipe1m_errors_name_the_file(tmp_path, recipe_root):
    (tmp_path / "layer1.json").write_text((recipe_root / "layer1.json").read_text())
    with pytest.raises(D.DatasetError, match="layer2.json"):
        D.recipe1m_recipes(tmp_path, "train")
    (tmp_path / "layer2.json").write_text("[]")
    with pytest.raises(D.DatasetError, match="no 'train' recipe with images"):
        D.recipe1m_recipes(tmp_path, "train")


def test_holdout_split_is_by_key_not_order(food_root):
    samples, _ = D.food101_samples(food_root, "train")
    tr1, va1 = D.holdout_split(samples, 0.3, seed=1)
    tr2, va2 = D.holdout_split(list(reversed(samples)), 0.3, seed=1)
    assert {s.key for s in va1} == {s.key for s in va2}
    assert 0 < len(va1) < len(samples)


def test_eval_transform_matches_the_runtime_arithmetic(tmp_path):
    from PIL import Image

    a = (torch.arange(20 * 30 * 3) % 251).reshape(20, 30, 3).to(torch.uint8).numpy()
    img = Image.fromarray(a)
    spec = PreprocessSpec(8, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 255.0, 0.875, "bilinear")
    x = EvalTransform(spec)(img)
    s = 0.875 * 20
    ref = img.resize((8, 8), Image.BILINEAR, box=((30 - s) / 2, (20 - s) / 2, (30 + s) / 2, (20 + s) / 2))
    ref = (torch.from_numpy(np.asarray(ref, dtype=np.float32)) - 127) / 128
    assert x.shape == (3, 8, 8)
    torch.testing.assert_close(x, ref.permute(2, 0, 1))
