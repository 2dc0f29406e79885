"""Export -> pack.toml + ONNX (checked against PyTorch with onnxruntime inside `export`) ->
dishcam's own `models verify`, `classify` and `embed` on the exported packs, with parity to PyTorch.

The runtime tests use the already built binary: $DISHCAM_BIN, else <repo>/target/debug/dishcam.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dishcam_trainer.cli import main
from dishcam_trainer.data import load_rgb
from dishcam_trainer.export import ExportError, export_pack, to_toml
from dishcam_trainer.models import encode_texts
from dishcam_trainer.train import rebuild
from dishcam_trainer.transforms import EvalTransform
from dishcam_trainer.utils import load_checkpoint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DISHCAM_BIN", REPO / "target" / "debug" / "dishcam"))
MISSING_BIN = (
    f"\n\n*** SKIPPED: the dishcam binary is not built ({BIN}). Build it (`cargo build`) or set DISHCAM_BIN; "
    "these tests check that dishcam verifies and runs the trainer's packs. ***\n"
)


# Every exported tower runs on both of dishcam's backends, with parity to PyTorch on each.
BACKENDS = ("onnxruntime", "tract")


def dishcam(*args) -> subprocess.CompletedProcess:
    if not BIN.is_file():
        pytest.skip(MISSING_BIN)
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"dishcam {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def _checkpoint(tmp, upmc_root, head, image_model="tiny_efficientnet_v2", pooling="cls"):
    out = tmp / f"ck-{head}-{image_model}-{pooling}"
    argv = [
        "fusion",
        "--dataset",
        "upmc",
        "--data",
        str(upmc_root),
        "--head",
        head,
        "--image-model",
        image_model,
        "--text-model",
        "tiny_bert",
        "--text-pooling",
        pooling,
        "--vocab-size",
        "200",
        "--epochs",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return out / "last.pt"


def _export(ckpt, tmp, name):
    res = export_pack(ckpt, tmp / name, name=name)
    for c in res["checks"]:
        assert c["max_abs_diff"] <= 1e-4 * max(1, c["max_abs_ref"]), c
    manifest = tomllib.loads((tmp / name / "pack.toml").read_text())
    return tmp / name, manifest, res


def _torch_image_embedding(ckpt, image):
    _, model, _ = rebuild(load_checkpoint(ckpt))
    tower = model.image
    with torch.no_grad():
        return tower(EvalTransform(tower.spec)(load_rgb(image))[None])[0].numpy(), model


def _close(a, b, rel):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    err, scale = np.abs(a - b).max(), max(np.abs(b).max(), 1e-6)
    assert err <= rel * scale, f"max diff {err:.3g} vs max |ref| {scale:.3g}"


def test_toml_writer_round_trips():
    d = {
        "a": 1,
        "s": 'x "q"',
        "f": 0.5,
        "b": True,
        "l": ["batch", 3],
        "t": {"u": {"v": 2}},
        "arr": [{"n": "x", "sub": {"k": 1}}, {"n": "y"}],
    }
    assert tomllib.loads(to_toml(d)) == d


@pytest.mark.parametrize("image_model", ["tiny_efficientnet_v2", "tiny_efficientnet_lite0", "tiny_clip_vit"])
def test_image_tower_packs_run_in_dishcam(image_model, upmc_root, tmp_path):
    ckpt = _checkpoint(tmp_path, upmc_root, "image", image_model)
    pack, m, _ = _export(ckpt, tmp_path, f"img-{image_model.replace('_', '-')}")
    assert m["format_version"] == 1 and m["default_head"] == "image"
    enc = m["image_encoder"]
    assert enc["input"]["shape"][1:] == [3, enc["preprocess"]["height"], enc["preprocess"]["width"]]
    for f in [enc["variants"]["fp32"], m["heads"][0]["variants"]["fp32"], m["heads"][0]["labels"]]:
        assert (pack / f["file"]).stat().st_size == f["bytes"] and len(f["sha256"]) == 64
    dishcam("models", "verify", pack)
    photo = next((upmc_root / "images" / "train" / "apple_pie").glob("apple_pie_*.jpg"))
    want, model = _torch_image_embedding(ckpt, photo)
    with torch.no_grad():
        probs = torch.softmax(model.head(torch.from_numpy(want)[None]), -1)[0].numpy()
    for backend in BACKENDS:
        got = json.loads(dishcam("embed", "image", "--pack", pack, "--backend", backend, "--json", photo).stdout)
        _close(got["embedding"], want, 2e-2)
        out = json.loads(
            dishcam("classify", "--pack", pack, "--backend", backend, "--json", "--top", "3", photo).stdout
        )
        assert out["backend"] == backend
        top = out["top"]
        assert out["pack"] == pack.name and len(top) == 3
        got_probs = np.zeros(3)
        for t in top:
            got_probs[t["class"]] = t["probability"]
            assert t["label"] == load_checkpoint(ckpt)["model_config"]["classes"][t["class"]]
        _close(got_probs, probs, 2e-2)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_text_tower_packs_run_in_dishcam(pooling, upmc_root, tmp_path):
    ckpt = _checkpoint(tmp_path, upmc_root, "text", pooling=pooling)
    pack, m, _ = _export(ckpt, tmp_path, f"text-{pooling}")
    t = m["text_encoder"]
    assert t["pooling"] == pooling and t["pooled_in_graph"] and t["normalize"]
    assert m["text_head"] == "text" and "default_head" not in m
    assert [i["name"] for i in t["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    dishcam("models", "verify", pack)
    _, model, tok = rebuild(load_checkpoint(ckpt))
    text = "Best apple cinnamon crust recipe"
    with torch.no_grad():
        want = model.text(**encode_texts(tok, [text], t["max_length"]))[0].numpy()
    with torch.no_grad():
        probs = torch.softmax(model.head(torch.from_numpy(want)[None]), -1)[0]
    for backend in BACKENDS:
        got = json.loads(dishcam("embed", "text", "--pack", pack, "--backend", backend, "--json", text).stdout)
        _close(got["embedding"], want, 1e-3)
        out = json.loads(dishcam("classify", "--pack", pack, "--backend", backend, "--json", "--text", text).stdout)
        assert out["top"][0]["class"] == int(probs.argmax())
        assert abs(out["top"][0]["probability"] - float(probs.max())) < 1e-3


@pytest.mark.parametrize("head", ["early-fusion", "late-fusion"])
def test_fusion_packs_run_in_dishcam(head, upmc_root, tmp_path):
    ckpt = _checkpoint(tmp_path, upmc_root, head)
    pack, m, res = _export(ckpt, tmp_path, head)
    kinds = {h["name"]: h["kind"] for h in m["heads"]}
    assert m["fusion_head"] == head and kinds[head] == head
    if head == "late-fusion":
        assert kinds == {"late-fusion": "late-fusion", "image": "image", "text": "text"}
        late = next(h for h in m["heads"] if h["name"] == head)
        assert "variants" not in late and late["fuse"] == {
            "image_head": "image",
            "text_head": "text",
            "text_weight": 0.5,
        }
        assert (m["default_head"], m["text_head"]) == ("image", "text")
    else:
        assert any(c["model"] == "head_early-fusion.onnx" for c in res["checks"])
    dishcam("models", "verify", pack)
    photo = next((upmc_root / "images" / "train" / "beef_tartare").glob("*.jpg"))
    text = "raw beef capers at home"
    want_img, model = _torch_image_embedding(ckpt, photo)
    tok = rebuild(load_checkpoint(ckpt))[2]
    with torch.no_grad():
        want_txt = model.text(**encode_texts(tok, [text], m["text_encoder"]["max_length"]))[0]
        feats = torch.cat([torch.from_numpy(want_img), want_txt])[None]
        probs = torch.softmax(model.head(feats), -1)[0].numpy()
    for backend in BACKENDS:
        out = json.loads(
            dishcam(
                "classify", "--pack", pack, "--backend", backend, "--json", "--top", "3", photo, "--text", text
            ).stdout
        )
        got = np.zeros(3)
        for t in out["top"]:
            got[t["class"]] = t["probability"]
        _close(got, probs, 2e-2)


def test_retrieval_pack_embeds_both_sides_in_one_space(recipe_root, tmp_path):
    out = tmp_path / "ret"
    argv = [
        "retrieval",
        "--data",
        str(recipe_root),
        "--image-model",
        "tiny_efficientnet_v2",
        "--text-model",
        "tiny_bert",
        "--vocab-size",
        "200",
        "--text-pooling",
        "mean",
        "--dim",
        "16",
        "--epochs",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    pack, m, _ = _export(out / "last.pt", tmp_path, "retrieval")
    assert m["image_encoder"]["embedding_dim"] == m["text_encoder"]["embedding_dim"] == 16
    assert "heads" not in m
    dishcam("models", "verify", pack)
    ck = load_checkpoint(out / "last.pt")
    _, model, tok = rebuild(ck)
    from dishcam_trainer.data import recipe1m_recipes

    r = recipe1m_recipes(recipe_root, "train")[0]
    with torch.no_grad():
        want_img = model.embed_image(EvalTransform(model.image.spec)(load_rgb(r.images[0]))[None])[0].numpy()
        want_txt = model.embed_recipe(encode_texts(tok, [r.text()], 128))[0][0].numpy()
    got_img = json.loads(dishcam("embed", "image", "--pack", pack, "--json", r.images[0]).stdout)["embedding"]
    got_txt = json.loads(dishcam("embed", "text", "--pack", pack, "--json", r.text()).stdout)["embedding"]
    _close(got_img, want_img, 2e-2)
    _close(got_txt, want_txt, 1e-3)

    # `dishcam eval retrieval` on the same Recipe1M folder: one pair per recipe with an image,
    # the recipe text as the trainer builds it, H-T's protocol (one bag: fewer than 1k pairs).
    ev = json.loads(dishcam("eval", "retrieval", "--pack", pack, "--pairs", recipe_root, "--json").stdout)
    n = len(recipe1m_recipes(recipe_root, None))
    assert ev["schema"] == "dishcam.eval.retrieval/1"
    assert ev["pairs"] == n
    [bag] = ev["results"]
    assert (bag["bag_size"], bag["bags"]) == (n, 1)
    for side in ("image_to_recipe", "recipe_to_image"):
        s = bag[side]
        assert 1 <= s["med_r"] <= n
        assert 0 <= s["r_at_1"] <= s["r_at_5"] <= s["r_at_10"] <= 1


def test_hierarchical_encoder_is_refused_with_a_reason(recipe_root, tmp_path):
    out = tmp_path / "ht"
    argv = [
        "retrieval",
        "--data",
        str(recipe_root),
        "--image-model",
        "tiny_efficientnet_v2",
        "--text-model",
        "tiny_bert",
        "--recipe-encoder",
        "ht",
        "--ht-dim",
        "16",
        "--ht-heads",
        "2",
        "--ht-out-dim",
        "16",
        "--dim",
        "8",
        "--epochs",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    with pytest.raises(ExportError, match="--recipe-encoder text"):
        export_pack(out / "last.pt", tmp_path / "htpack")


def test_calibrate_makes_int8_variants(upmc_root, tmp_path):
    """An exported pack goes through `dishcam calibrate` (into its user overlay, under a private
    DISHCAM_HOME), gains int8 variants of its image encoder, and still verifies."""
    if not BIN.is_file():
        pytest.skip(MISSING_BIN)
    # A private home keeps the overlay out of the user's; the onnxruntime library comes from the
    # real one (`dishcam models pull` put it there), so the int8 variants are checked against fp32.
    real_home = Path(os.environ.get("DISHCAM_HOME") or Path.home() / ".local" / "share" / "dishcam")
    lib = real_home / "cache" / "onnxruntime" / "1.31.1" / "libonnxruntime.so.1.31.1"
    env = {**os.environ, "DISHCAM_HOME": str(tmp_path / "home")}
    if "ORT_DYLIB_PATH" not in env and lib.is_file():
        env["ORT_DYLIB_PATH"] = str(lib)
    have_ort = "ORT_DYLIB_PATH" in env
    for model in ("tiny_efficientnet_v2", "tiny_clip_vit"):
        pack, _, _ = _export(
            _checkpoint(tmp_path, upmc_root, "image", model), tmp_path, f"cal-{model.replace('_', '-')}"
        )
        r = subprocess.run(
            [
                str(BIN),
                "calibrate",
                "--pack",
                str(pack),
                "--images",
                str(upmc_root / "images" / "train"),
                "--samples",
                "32",
                "--validate",
                "4",
                "--holdout",
                "0.1",
                "--keep-fp32",
                "none",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert r.returncode == 0, f"calibrate failed:\n{r.stdout}\n{r.stderr}"
        report = json.loads(r.stdout)
        assert report["calibration_photos"] == 32
        if have_ort:
            # Agreement with fp32 is measured and reported (tiny random towers: no threshold on
            # its value beyond being a real fraction and cosine).
            [a] = report["agreement"]
            assert 0.0 <= a["top1"] <= 1.0 and -1.0 <= a["cosine_mean"] <= 1.0 + 1e-6, a
            assert a["photos"] > 0
            print(f"{model}: int8 top-1 agreement {a['top1']:.3f}, cosine {a['cosine_mean']:.4f}")
        else:
            print("\n*** no onnxruntime library: int8 agreement not measured (run `dishcam models pull lite`) ***")
        info = subprocess.run(
            [str(BIN), "models", "info", str(pack), "--json"], capture_output=True, text=True, env=env
        )
        assert info.returncode == 0, info.stderr
        variants = json.loads(info.stdout)["image_encoder"]["variants"]
        assert "int8" in variants, variants
        r = subprocess.run([str(BIN), "models", "verify", str(pack)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
