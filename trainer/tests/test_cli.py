import json

import pytest
import torch

from dishcam_trainer.cli import main, parse
from dishcam_trainer.utils import load_checkpoint

TINY_FUSION = ["--image-model", "tiny_efficientnet_v2", "--text-model", "tiny_bert", "--vocab-size", "200", "--quiet"]


def _run(argv, capsys):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_early_fusion_learns_a_separable_problem(upmc_root, tmp_path, capsys):
    out = tmp_path / "early"
    res = _run(
        [
            "fusion",
            "--dataset",
            "upmc",
            "--data",
            str(upmc_root),
            "--head",
            "early-fusion",
            *TINY_FUSION,
            "--epochs",
            "8",
            "--batch-size",
            "8",
            "--lr",
            "1e-2",
            "--val-fraction",
            "0.3",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert res["n"] >= 5 and res["acc"] >= 85.0, res
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) == 9
    ck = load_checkpoint(out / "best.pt")
    assert ck["task"] == "fusion" and ck["model_config"]["head"] == "early-fusion"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    again = _run(["eval", str(out / "last.pt"), "--data", str(upmc_root)], capsys)
    assert again["n"] == res["n"] and again["acc"] == pytest.approx(res["acc"])


def test_late_fusion_and_frozen_towers_on_cached_features(upmc_root, tmp_path, capsys):
    res = _run(
        [
            "fusion",
            "--dataset",
            "upmc",
            "--data",
            str(upmc_root),
            "--head",
            "late-fusion",
            *TINY_FUSION,
            "--freeze",
            "--epochs",
            "15",
            "--batch-size",
            "8",
            "--lr",
            "3e-2",
            "--val-fraction",
            "0.3",
            "--out",
            str(tmp_path / "late"),
        ],
        capsys,
    )
    assert res["acc"] >= 70.0, res
    ck = load_checkpoint(tmp_path / "late" / "last.pt")
    first = {k: v for k, v in ck["model"].items() if k.startswith("image.")}
    fresh = load_checkpoint(tmp_path / "late" / "best.pt")["model"]
    assert all(torch.equal(v, fresh[k]) for k, v in first.items())  # towers stayed frozen


def test_resume_replays_an_uninterrupted_run(food_root, tmp_path, capsys):
    base = [
        "fusion",
        "--data",
        str(food_root),
        "--head",
        "image",
        "--image-model",
        "tiny_efficientnet_v2",
        "--quiet",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--val-split",
        "test",
        "--randaug",
        "5",
        "--seed",
        "7",
    ]
    _run([*base, "--out", str(tmp_path / "a")], capsys)
    _run([*base, "--out", str(tmp_path / "b"), "--stop-after", "1"], capsys)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 0
    _run([*base, "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "b" / "last.pt")], capsys)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert len((tmp_path / "b" / "log.csv").read_text().splitlines()) == 4


def test_config_files_and_flag_precedence(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("data: /d\nbatch_size: 5\nlabel-smoothing: 0.2\nhead: image\n")
    a = parse(["fusion", "--config", str(y), "--batch-size", "7"])
    assert (a.data, a.batch_size, a.label_smoothing, a.head) == ("/d", 7, 0.2, "image")
    t = tmp_path / "c.toml"
    t.write_text('data = "/r"\nloss = "infonce"\nmargin = 0.2\n')
    b = parse(["retrieval", "--config", str(t)])
    assert (b.data, b.loss, b.margin, b.amp) == ("/r", "infonce", 0.2, "off")
    t.write_text('data = "/r"\nmargn = 0.2\n')
    with pytest.raises(SystemExit):
        parse(["retrieval", "--config", str(t)])
    with pytest.raises(SystemExit):
        parse(["fusion"])  # no --data


@pytest.mark.parametrize("encoder,loss", [("text", "triplet"), ("ht", "infonce")])
def test_retrieval_trains_and_evaluates(recipe_root, tmp_path, capsys, encoder, loss):
    out = tmp_path / encoder
    res = _run(
        [
            "retrieval",
            "--data",
            str(recipe_root),
            "--image-model",
            "tiny_clip_vit",
            "--text-model",
            "tiny_bert",
            "--vocab-size",
            "200",
            "--recipe-encoder",
            encoder,
            "--loss",
            loss,
            "--ht-dim",
            "32",
            "--ht-heads",
            "2",
            "--ht-out-dim",
            "32",
            "--dim",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
            "--val-split",
            "val",
            "--angle-aux-w",
            "0.1",
            "--quiet",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert res["bag_size"] == 6 and 1 <= res["i2r_medR"] <= 6 and 0 <= res["r2i_R@1"] <= 100
    ev = _run(["eval", str(out / "last.pt"), "--data", str(recipe_root)], capsys)
    assert ev["pairs"] == 6 and ev["i2r_medR"] == pytest.approx(res["i2r_medR"])


def test_progressive_learning_grows_image_size_by_stage(food_root, tmp_path, capsys):
    out = tmp_path / "prog"
    _run(
        [
            "fusion",
            "--data",
            str(food_root),
            "--head",
            "image",
            "--image-model",
            "tiny_efficientnet_v2",
            "--progressive",
            "--stages",
            "2",
            "--min-image-size",
            "32",
            "--max-image-size",
            "64",
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--max-batches",
            "2",
            "--val-split",
            "test",
            "--quiet",
            "--out",
            str(out),
        ],
        capsys,
    )
    import csv

    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["image_size"]) for r in rows] == [48, 48, 64, 64]
    assert [int(r["stage"]) for r in rows] == [0, 0, 1, 1]
    assert float(rows[0]["randaug"]) == 7.5 and float(rows[-1]["randaug"]) == 10.0
    assert all(int(r["step"]) == 2 * (i + 1) for i, r in enumerate(rows))


def test_gradient_accumulation_matches_the_larger_batch(food_root, tmp_path, capsys):
    base = ["fusion", "--data", str(food_root), "--head", "image", "--image-model", "tiny_efficientnet_v2",
            "--freeze", "--epochs", "2", "--val-split", "test", "--lr", "1e-2", "--quiet"]  # fmt: skip
    _run([*base, "--batch-size", "8", "--out", str(tmp_path / "big")], capsys)
    _run([*base, "--batch-size", "4", "--accum", "2", "--out", str(tmp_path / "acc")], capsys)
    big = load_checkpoint(tmp_path / "big" / "last.pt")
    acc = load_checkpoint(tmp_path / "acc" / "last.pt")
    assert big["step"] == acc["step"] == 2 * (36 // 8)
    for k, v in big["model"].items():
        torch.testing.assert_close(v, acc["model"][k], atol=1e-5, rtol=1e-4)
