"""`dishcam-train` / `python -m dishcam_trainer`: fusion, retrieval, eval, export.

Every flag can also come from `--config FILE` (YAML or TOML, keys are flag names with `_` or
`-`); flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import json
import sys

from .utils import load_config


def _common_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", help="YAML/TOML file of flag values (command-line flags win)")
    g.add_argument("--data", help="dataset root")
    g.add_argument("--images", help="image folder when it is not under the dataset root")
    g.add_argument("--out", default="runs/latest", help="output directory: last.pt, best.pt, log.csv")
    g.add_argument("--resume", help="checkpoint to continue from (e.g. OUT/last.pt)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--warmup", type=float, default=0.05, help="fraction of steps with linear warm-up")
    g.add_argument("--clip-grad", type=float, default=0.0)
    g.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto", help="CUDA only")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    g.add_argument("--stop-after", type=int, default=0, help="end this invocation after N epochs (resume later)")
    g.add_argument("--max-batches", type=int, default=0, help="stop each epoch after N batches (0 = all)")
    g.add_argument("--val-split", default="holdout", help="'holdout' (carved from train by key hash) or a split name")
    g.add_argument("--val-fraction", type=float, default=0.1)
    g.add_argument("--quiet", action="store_true")
    g.add_argument(
        "--weights-digest",
        action="store_true",
        help="write each rank's final weight sha256 to OUT/weights-rank<k>.sha256",
    )
    m = p.add_argument_group("towers")
    m.add_argument("--image-model", default="efficientnet_v2_s")
    m.add_argument("--image-size", type=int, default=None)
    m.add_argument("--hub-name", default=None, help="hub model for clip_vit (default openai/clip-vit-base-patch16)")
    m.add_argument("--text-model", default="WhereIsAI/UAE-Large-V1", help="hub name/dir or tiny_bert")
    m.add_argument("--text-pooling", choices=["cls", "mean"], default=None, help="default: cls for AnglE/UAE")
    m.add_argument("--vocab-size", type=int, default=600, help="tiny_bert only: WordPiece vocabulary size")
    m.add_argument("--max-length", type=int, default=128)
    m.add_argument("--pretrained", action="store_true", help="start from published weights (hub/torchvision)")
    m.add_argument("--randaug", type=float, default=0.0, help="RandAugment magnitude (0 = off)")
    m.add_argument("--mixup", type=float, default=0.0)
    m.add_argument("--cutmix", type=float, default=0.0)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="dishcam-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fusion", help="train an image / text / early- or late-fusion classifier")
    _common_train(f)
    f.add_argument("--dataset", choices=["food101", "upmc", "upmc-titles"], default="food101")
    f.add_argument("--head", choices=["image", "text", "early-fusion", "late-fusion"], default="early-fusion")
    f.add_argument("--freeze", action="store_true", help="freeze the towers and train the head on cached features")
    f.add_argument("--label-smoothing", type=float, default=0.1)
    f.add_argument("--dropout", type=float, default=0.0)
    f.add_argument("--late-weight", type=float, default=0.5, help="image weight of late fusion")
    f.add_argument("--missing", choices=["error", "skip"], default="error", help="Food-101 ids without an image")
    f.add_argument("--titles", help="UPMC titles CSV (upmc-titles: e.g. titles_dev.csv)")
    f.add_argument("--classes-file", help="class list (one per line) fixing the label order")
    f.add_argument("--progressive", action="store_true", help="EfficientNetV2 progressive learning")
    f.add_argument("--stages", type=int, default=4)
    f.add_argument("--min-image-size", type=int, default=None)
    f.add_argument("--max-image-size", type=int, default=None)

    r = sub.add_parser("retrieval", help="train image <-> recipe retrieval on Recipe1M")
    _common_train(r)
    r.add_argument("--split", default="train", help="Recipe1M partition to train on")
    r.add_argument("--recipe-encoder", choices=["text", "ht"], default="text")
    r.add_argument("--dim", type=int, default=1024, help="shared embedding size")
    r.add_argument("--ht-dim", type=int, default=512)
    r.add_argument("--ht-heads", type=int, default=4)
    r.add_argument("--ht-layers", type=int, default=2)
    r.add_argument("--ht-out-dim", type=int, default=1024)
    r.add_argument("--ht-max-tokens", type=int, default=32)
    r.add_argument("--ht-max-sentences", type=int, default=20)
    r.add_argument("--loss", choices=["triplet", "infonce"], default="triplet")
    r.add_argument("--margin", type=float, default=0.3)
    r.add_argument("--temperature", type=float, default=0.07)
    r.add_argument("--component-w", type=float, default=1.0, help="H-T self-supervised recipe loss weight")
    r.add_argument("--angle-aux-w", type=float, default=0.0, help="weight of AnglE (title vs recipe text)")
    r.add_argument("--cosine-w", type=float, default=0.0, help="AnglE CoSENT weight")
    r.add_argument("--ibn-w", type=float, default=20.0, help="AnglE in-batch negative weight")
    r.add_argument("--angle-w", type=float, default=1.0, help="AnglE angle-loss weight")
    r.add_argument("--cosine-tau", type=float, default=20.0)
    r.add_argument("--ibn-tau", type=float, default=20.0)
    r.add_argument("--angle-tau", type=float, default=20.0)
    r.add_argument("--bag-size", type=int, default=1000)
    r.add_argument("--bags", type=int, default=10)
    r.add_argument("--freeze-image", action="store_true")

    e = sub.add_parser("eval", help="evaluate a checkpoint (accuracy/top-5 or medR/R@K)")
    e.add_argument("--config")
    e.add_argument("checkpoint")
    e.add_argument("--data")
    e.add_argument("--images")
    e.add_argument("--titles")
    e.add_argument("--missing", choices=["error", "skip"])
    e.add_argument("--val-split", help="'holdout' (as in training) or a split name such as test")
    e.add_argument("--eval-batch-size", type=int)
    e.add_argument("--bag-size", type=int)
    e.add_argument("--bags", type=int)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print only the JSON metrics")

    x = sub.add_parser("export", help="export a checkpoint to a dishcam model pack (ONNX + pack.toml)")
    x.add_argument("--config")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=False, help="pack directory to write")
    x.add_argument("--name", default="trained", help="pack name (letters, digits, - _ .)")
    x.add_argument("--version", default="0.1.0")
    x.add_argument("--description", default="")
    x.add_argument("--max-length", type=int, default=None, help="text tokens (default: as trained)")
    x.add_argument("--tol", type=float, default=1e-4, help="onnxruntime vs PyTorch tolerance (relative)")
    x.add_argument("--overwrite", action="store_true")
    return parser, {"fusion": f, "retrieval": r, "eval": e, "export": x}


def parse(argv=None) -> argparse.Namespace:
    parser, subs = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        cfg = load_config(args.config)
        sp = subs[args.command]
        known = {a.dest for a in sp._actions}
        unknown = sorted(set(cfg) - known)
        if unknown:
            sp.error(f"{args.config}: unknown key(s) {', '.join(unknown)}; keys are this command's flag names")
        sp.set_defaults(**cfg)
        args = parser.parse_args(argv)
    if args.command in ("fusion", "retrieval") and not args.data:
        parser.error(f"{args.command}: --data DIR is required (flag or config)")
    if args.command == "export" and not args.out:
        parser.error("export: --out DIR is required")
    if getattr(args, "amp", None) == "auto":
        import torch

        cuda = torch.cuda.is_available() and args.device != "cpu"
        args.amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    return args


def _eval(args) -> dict:
    from . import train as T
    from .dist import init_distributed
    from .metrics import retrieval_metrics
    from .utils import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    stored = dict(ckpt.get("args", {}))
    for k, v in vars(args).items():
        if v is not None and k not in ("command", "checkpoint", "config", "json"):
            stored[k] = v
    stored.setdefault("amp", "off")
    stored["quiet"] = True
    a = argparse.Namespace(**stored)
    info = init_distributed(args.device)
    task, model, tokenizer = T.rebuild(ckpt)
    model.to(info.device)
    from . import data as D
    from .transforms import EvalTransform

    if task == "fusion":
        _, va, classes = T.fusion_samples(a)
        if classes != ckpt["model_config"]["classes"]:
            raise ValueError("the dataset's classes differ from the checkpoint's; pass the data it was trained on")
        spec = model.image.spec if model.image is not None else None
        ds = D.ClassificationDataset(
            va, EvalTransform(spec) if spec else None, model.image is not None, model.text is not None
        )
        dl = T._loader(ds, a.eval_batch_size, info, False, a.seed, 0, 0, D.collate)
        return {"task": "fusion", "split": a.val_split, **T.evaluate_fusion(model, dl, tokenizer, a, info, False)}
    if a.val_split == "holdout":
        from .utils import stable_fraction

        recipes = D.recipe1m_recipes(a.data, a.split, a.images)
        val = [r for r in recipes if stable_fraction(r.id, a.seed) < a.val_fraction]
    else:
        val = D.recipe1m_recipes(a.data, a.val_split, a.images)
    ds = D.RecipeImageDataset(val, EvalTransform(model.image.spec), train=False)
    img, rec = T.embed_pairs(model, ds, tokenizer, a, info)
    return {
        "task": "retrieval",
        "split": a.val_split,
        "pairs": len(val),
        **retrieval_metrics(img, rec, a.bag_size, a.bags, a.seed),
    }


def main(argv=None) -> int:
    args = parse(argv)
    if args.command == "fusion":
        from .train import run_fusion

        result = run_fusion(args)
    elif args.command == "retrieval":
        from .train import run_retrieval

        result = run_retrieval(args)
    elif args.command == "eval":
        result = _eval(args)
    else:
        from .export import export_pack

        result = export_pack(
            args.checkpoint,
            args.out,
            args.name,
            args.version,
            args.description,
            args.max_length,
            args.tol,
            args.overwrite,
        )
    import os

    from .dist import finish_distributed

    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, default=str))
    finish_distributed()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
