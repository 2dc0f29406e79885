"""The `fusion` and `retrieval` training loops (single process or torchrun/DDP)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, TensorDataset
from tqdm import tqdm

from . import data as D
from .dist import DistInfo, all_gather_tensors, init_distributed
from .losses import (
    AngleWeights,
    angle_objective,
    info_nce_loss,
    recipe_component_loss,
    smoothed_cross_entropy,
    triplet_loss,
)
from .metrics import retrieval_metrics, topk_correct
from .models import (
    ClassifierHead,
    FusionClassifier,
    HierarchicalRecipeEncoder,
    RetrievalModel,
    build_image_tower,
    build_text_tower,
    encode_recipes_hier,
    encode_texts,
    load_hub_tokenizer,
    train_wordpiece,
)
from .progressive import PRESETS, ProgressiveRange, stage_for_epoch, stage_settings
from .transforms import EvalTransform, TrainTransform, mix_batch
from .utils import CsvLog, atomic_torch_save, epoch_seed, load_checkpoint, rng_state, seed_everything, set_rng_state


def checkpoint_payload(task, cfg, tokenizer, model, opt, args, epoch, step, best, metrics) -> dict:
    """Everything a checkpoint holds: enough to resume (optimizer, step, RNG) and to export."""
    return {
        "task": task,
        "model_config": cfg,
        "tokenizer": tokenizer.to_str() if tokenizer is not None else None,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "step": step,
        "best": best,
        "metrics": metrics,
        "rng": rng_state(),
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))},
    }


# ---------------------------------------------------------------------------------------------
# Building models from a stored config


def make_tokenizer(text_model: str, texts, vocab_size: int):
    if text_model.startswith("tiny_bert"):
        return train_wordpiece(texts, vocab_size)
    return load_hub_tokenizer(text_model)


def tokenizer_from_str(s: str | None):
    if s is None:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_str(s)


def build_fusion(cfg: dict, pretrained: bool) -> FusionClassifier:
    """`cfg`: head, classes, image_model, image_size, hub_name, text_model, text_pooling,
    vocab_size, dropout, late_weight. Built from the config alone (weights load afterwards)."""
    kind = cfg["head"]
    image = text = None
    dims = []
    if kind in ("image", "early-fusion", "late-fusion"):
        image = build_image_tower(cfg["image_model"], pretrained, cfg.get("image_size"), cfg.get("hub_name"))
        dims.append(image.dim)
    if kind in ("text", "early-fusion", "late-fusion"):
        text = build_text_tower(cfg["text_model"], cfg.get("text_pooling"), True, pretrained, cfg.get("vocab_size"))
        dims.append(text.dim)
    head = ClassifierHead(kind, dims, len(cfg["classes"]), cfg.get("dropout", 0.0), cfg.get("late_weight", 0.5))
    return FusionClassifier(image, text, head)


def build_retrieval(cfg: dict, pretrained: bool) -> RetrievalModel:
    image = build_image_tower(cfg["image_model"], pretrained, cfg.get("image_size"), cfg.get("hub_name"))
    if cfg["recipe_encoder"] == "ht":
        rec = HierarchicalRecipeEncoder(
            cfg["vocab_size"], cfg["ht_dim"], cfg["ht_heads"], cfg["ht_layers"], cfg["ht_out_dim"], cfg["ht_max_tokens"]
        )
    else:
        rec = build_text_tower(cfg["text_model"], cfg.get("text_pooling"), False, pretrained, cfg.get("vocab_size"))
    return RetrievalModel(image, rec, cfg["recipe_encoder"], cfg["dim"])


def rebuild(ckpt: dict):
    """(task, model with the checkpoint's weights, tokenizer) from a checkpoint."""
    cfg = ckpt["model_config"]
    model = build_fusion(cfg, False) if ckpt["task"] == "fusion" else build_retrieval(cfg, False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return ckpt["task"], model, tokenizer_from_str(ckpt.get("tokenizer"))


# ---------------------------------------------------------------------------------------------
# Shared loop pieces


def _amp_context(info: DistInfo, amp: str):
    if info.device.type == "cuda" and amp != "off":
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _loader(dataset, batch_size, info: DistInfo, train: bool, seed: int, epoch: int, workers: int, collate):
    if info.distributed:
        sampler = DistributedSampler(dataset, info.world, info.rank, shuffle=train, seed=seed, drop_last=train)
        sampler.set_epoch(epoch)
    elif train:
        g = torch.Generator()
        g.manual_seed(epoch_seed(seed, epoch))
        sampler = RandomSampler(dataset, generator=g)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=train,
        persistent_workers=False,
    )


def _optimizer(model, args):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def _lr_at(step: int, total: int, args) -> float:
    warm = max(1, int(args.warmup * total)) if args.warmup > 0 else 0
    if warm and step < warm:
        return args.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class Runner:
    """Holds what both tasks share: output dir, logs, checkpoints, step accounting."""

    def __init__(self, args, info: DistInfo):
        self.args = args
        self.info = info
        self.out = Path(args.out)
        if info.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if info.main and not args.resume and (self.out / "log.csv").exists():
            (self.out / "log.csv").unlink()  # a fresh run starts a fresh log; a resumed one appends
        self.log = CsvLog(self.out / "log.csv", enabled=info.main)

    def save(self, name: str, payload: dict) -> None:
        if self.info.main:
            atomic_torch_save(payload, self.out / name)

    def digest(self, model) -> None:
        """sha256 of this rank's weights, to check that DDP kept the ranks identical."""
        if not self.args.weights_digest:
            return
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(_unwrap(model).state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"weights-rank{self.info.rank}.sha256").write_text(h.hexdigest() + "\n")

    def barrier(self) -> None:
        if self.info.distributed:
            dist.barrier()


def _unwrap(m):
    return m.module if isinstance(m, DDP) else m


def _train_steps(model, opt, batches, loss_fn, args, info, step0: int, total_steps: int, desc: str):
    """One epoch of optimisation with gradient accumulation; returns (mean loss, steps taken)."""
    scaler = torch.amp.GradScaler("cuda") if info.device.type == "cuda" and args.amp == "fp16" else None
    model.train()
    losses = []
    step = step0
    accum = max(1, args.accum)
    it = tqdm(batches, desc=desc, disable=not info.main or args.quiet, leave=False)
    opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(it):
        last_micro = (i + 1) % accum == 0
        sync = model.no_sync() if isinstance(model, DDP) and not last_micro else contextlib.nullcontext()
        with sync, _amp_context(info, args.amp):
            loss = loss_fn(batch) / accum
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
        losses.append(loss.item() * accum)
        if last_micro:
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total_steps, args)
            if args.clip_grad > 0:
                if scaler is not None:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            it.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if args.max_batches and i + 1 >= args.max_batches:
            break
    return (float(np.mean(losses)) if losses else float("nan")), step


def _resume(path, model, opt):
    ckpt = load_checkpoint(path)
    _unwrap(model).load_state_dict(ckpt["model"])
    if opt is not None and ckpt.get("optimizer"):
        opt.load_state_dict(ckpt["optimizer"])
    if ckpt.get("rng"):
        set_rng_state(ckpt["rng"])
    return ckpt


# ---------------------------------------------------------------------------------------------
# Fusion classification


def fusion_samples(args):
    """(train samples, val samples, classes) for the chosen dataset."""
    if args.dataset == "food101":
        samples, classes = D.food101_samples(args.data, "train", args.images, args.missing)
        if args.val_split == "holdout":
            tr, va = D.holdout_split(samples, args.val_fraction, args.seed)
        else:
            tr = samples
            va, _ = D.food101_samples(args.data, args.val_split, args.images, args.missing)
            idx = {c: i for i, c in enumerate(classes)}
            va = [s for s in va if s.key.split("/", 1)[0] in idx]
    elif args.dataset in ("upmc", "upmc-titles"):
        text_only = args.dataset == "upmc-titles"
        classes = None
        if args.classes_file:
            classes = D.read_lines(Path(args.classes_file))
        samples, classes = D.upmc_samples(args.data, "train", classes, text_only, args.titles)
        if args.val_split == "holdout":
            tr, va = D.holdout_split(samples, args.val_fraction, args.seed)
        else:
            tr = samples
            va, _ = D.upmc_samples(args.data, args.val_split, classes, text_only, None)
    else:
        raise ValueError(f"unknown dataset '{args.dataset}' (food101, upmc, upmc-titles)")
    if not tr or not va:
        raise D.DatasetError(f"{args.data}: empty train ({len(tr)}) or validation ({len(va)}) split")
    return tr, va, classes


def _fusion_inputs(model: FusionClassifier, batch, tokenizer, args, device):
    pixels = batch["image"].to(device) if "image" in batch else None
    text = encode_texts(tokenizer, batch["text"], args.max_length, device) if "text" in batch else None
    return pixels, text


@torch.no_grad()
def _cache_features(model: FusionClassifier, samples, tokenizer, args, info, spec_tf):
    ds = D.ClassificationDataset(samples, spec_tf, model.image is not None, model.text is not None)
    dl = DataLoader(ds, batch_size=args.eval_batch_size, num_workers=args.workers, collate_fn=D.collate)
    feats, labels = [], []
    model.eval()
    for b in tqdm(dl, desc="features", disable=not info.main or args.quiet, leave=False):
        pixels, text = _fusion_inputs(model, b, tokenizer, args, info.device)
        feats.append(model.features(pixels, text).float().cpu())
        labels.append(b["label"])
    return TensorDataset(torch.cat(feats), torch.cat(labels))


@torch.no_grad()
def evaluate_fusion(model: FusionClassifier, loader, tokenizer, args, info, cached: bool) -> dict:
    model.eval()
    n = c1 = c5 = 0
    loss = 0.0
    for b in loader:
        if cached:
            feats, y = b[0].to(info.device), b[1].to(info.device)
            logits = model.head(feats)
        else:
            y = b["label"].to(info.device)
            with _amp_context(info, args.amp):
                logits = model(*_fusion_inputs(model, b, tokenizer, args, info.device)).float()
        c = topk_correct(logits, y, (1, 5))
        c1 += c[1]
        c5 += c[5]
        n += y.shape[0]
        if model.head.kind == "late-fusion":
            loss += float(torch.nn.functional.nll_loss(logits, y, reduction="sum"))
        else:
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    t = torch.tensor([n, c1, c5, loss], dtype=torch.float64, device=info.device)
    if info.distributed:
        dist.all_reduce(t)
    n, c1, c5, loss = t.tolist()
    return {"n": int(n), "acc": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "loss": loss / max(n, 1)}


def run_fusion(args) -> dict:
    info = init_distributed(args.device)
    seed_everything(args.seed + info.rank)
    runner = Runner(args, info)
    tr, va, classes = fusion_samples(args)
    resume = None
    if args.resume:
        resume = load_checkpoint(args.resume)
        cfg = resume["model_config"]
        tokenizer = tokenizer_from_str(resume.get("tokenizer"))
    else:
        cfg = {
            "head": args.head,
            "classes": classes,
            "image_model": args.image_model,
            "image_size": args.image_size,
            "hub_name": args.hub_name,
            "text_model": args.text_model,
            "text_pooling": args.text_pooling,
            "vocab_size": args.vocab_size,
            "dropout": args.dropout,
            "late_weight": args.late_weight,
            "max_length": args.max_length,
        }
        tokenizer = None
        if args.head in ("text", "early-fusion", "late-fusion"):
            tokenizer = make_tokenizer(args.text_model, [s.text for s in tr], args.vocab_size)
            cfg["vocab_size"] = tokenizer.get_vocab_size()
    if cfg["classes"] != classes:
        raise ValueError("the checkpoint's class list differs from the dataset's; resume with the same data")
    model = build_fusion(cfg, args.pretrained and resume is None).to(info.device)
    if args.freeze:
        for tower in (model.image, model.text):
            if tower is not None:
                tower.requires_grad_(False)
    opt = _optimizer(model, args)
    start_epoch, step, best = 0, 0, -1.0
    if resume is not None:
        _resume(args.resume, model, opt)
        start_epoch, step, best = resume["epoch"] + 1, resume["step"], resume.get("best", -1.0)
    if info.main:
        print(f"fusion: {len(tr)} train / {len(va)} val samples, {len(classes)} classes, head {cfg['head']}")

    spec = model.image.spec if model.image is not None else None
    eval_tf = EvalTransform(spec) if spec else None
    use_img, use_txt = model.image is not None, model.text is not None
    cached = bool(args.freeze)
    if cached:
        # Frozen towers: features are computed once (no augmentation) and only the head trains.
        train_set = _cache_features(model, tr, tokenizer, args, info, eval_tf)
        val_set = _cache_features(model, va, tokenizer, args, info, eval_tf)
    else:
        val_set = D.ClassificationDataset(va, eval_tf, use_img, use_txt)
    # Cached features: only the head trains, so only the head is wrapped and stepped.
    trained = model.head if cached else model
    ddp_model = DDP(trained) if info.distributed else trained

    steps_per_epoch = max(1, len(tr) // max(1, info.world) // args.batch_size // max(1, args.accum))
    if args.max_batches:
        steps_per_epoch = min(steps_per_epoch, max(1, args.max_batches // max(1, args.accum)))
    total = steps_per_epoch * args.epochs
    prog = _progressive_range(args, cfg)
    branches = cfg["head"] == "late-fusion"

    def payload(epoch, metrics):
        return checkpoint_payload("fusion", cfg, tokenizer, model, opt, args, epoch, step, best, metrics)

    metrics = {}
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        torch.manual_seed(epoch_seed(args.seed, epoch, info.rank))
        stage_info = {}
        if cached:
            loader = _loader(train_set, args.batch_size, info, True, args.seed, epoch, 0, None)

            def loss_fn(b):
                feats, y = b[0].to(info.device), b[1].to(info.device)
                return _class_loss(ddp_model(feats, branches), y, args.label_smoothing)
        else:
            size, mag, mix = None, args.randaug, args.mixup
            if prog is not None:
                n_st = max(1, min(args.stages, args.epochs))
                st = stage_settings(prog, stage_for_epoch(epoch, args.epochs, n_st), n_st)
                size, mag, mix = st.image_size, st.randaug_magnitude, st.mixup_alpha
                model.head.dropout.p = st.dropout
                stage_info = {"stage": st.index, "image_size": st.image_size, "randaug": round(mag, 2), "mixup": mix}
            tf = TrainTransform(spec, size, mag) if spec else None
            ds = D.ClassificationDataset(tr, tf, use_img, use_txt)
            loader = _loader(ds, args.batch_size, info, True, args.seed, epoch, args.workers, D.collate)
            gen = torch.Generator().manual_seed(epoch_seed(args.seed, epoch, info.rank))

            def loss_fn(b, mix=mix, gen=gen):
                y = b["label"].to(info.device)
                pixels, text = _fusion_inputs(model, b, tokenizer, args, info.device)
                target = y
                if pixels is not None and (mix > 0 or args.cutmix > 0):
                    pixels, target = mix_batch(pixels, y, len(classes), mix, args.cutmix, gen)
                    target = target.to(info.device)
                return _class_loss(ddp_model(pixels, text, branches), target, args.label_smoothing)

        loss, step = _train_steps(ddp_model, opt, loader, loss_fn, args, info, step, total, f"epoch {epoch + 1}")
        if cached:
            vloader = _loader(val_set, args.eval_batch_size, info, False, args.seed, epoch, 0, None)
        else:
            vloader = _loader(val_set, args.eval_batch_size, info, False, args.seed, epoch, args.workers, D.collate)
        metrics = evaluate_fusion(model, vloader, tokenizer, args, info, cached)
        row = {"epoch": epoch + 1, "step": step, "train_loss": round(loss, 5), **stage_info}
        row.update({f"val_{k}": (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()})
        row["lr"] = opt.param_groups[0]["lr"]
        row["seconds"] = round(time.time() - t0, 2)
        runner.log.write(row)
        if info.main and not args.quiet:
            print(json.dumps(row))
        if metrics["acc"] > best:
            best = metrics["acc"]
            runner.save("best.pt", payload(epoch, metrics))
        runner.save("last.pt", payload(epoch, metrics))
        runner.barrier()
        if args.stop_after and epoch + 1 - start_epoch >= args.stop_after:
            break
    if args.epochs == 0 or start_epoch >= args.epochs:
        runner.save("last.pt", payload(max(start_epoch, args.epochs) - 1, metrics))
    runner.digest(model)
    return {"best_acc": best, **metrics}


def _class_loss(out, target, smoothing: float):
    """Cross-entropy with label smoothing; a late-fusion head's branches each get their own."""
    if isinstance(out, list):
        return sum(smoothed_cross_entropy(o, target, smoothing) for o in out)
    return smoothed_cross_entropy(out, target, smoothing)


def _progressive_range(args, cfg) -> ProgressiveRange | None:
    if not args.progressive:
        return None
    name = cfg.get("image_model") or ""
    if name in PRESETS:
        base = PRESETS[name]
    else:
        base = PRESETS["efficientnet_v2_s"]
    return ProgressiveRange(
        args.min_image_size or base.min_size,
        args.max_image_size or base.max_size,
        base.min_randaug,
        base.max_randaug,
        base.min_mixup,
        base.max_mixup,
        base.min_dropout,
        base.max_dropout,
    )


# ---------------------------------------------------------------------------------------------
# Retrieval


def _recipe_inputs(model: RetrievalModel, recipes, tokenizer, args, device):
    if model.recipe_kind == "ht":
        t = encode_recipes_hier(tokenizer, recipes, args.ht_max_tokens, args.ht_max_sentences)
        return {k: v.to(device) for k, v in t.items()}
    return encode_texts(tokenizer, [r.text() for r in recipes], args.max_length, device)


@torch.no_grad()
def embed_pairs(model: RetrievalModel, dataset, tokenizer, args, info) -> tuple[np.ndarray, np.ndarray]:
    """Image and recipe embeddings of every pair (gathered from all ranks, in rank order)."""
    dl = _loader(dataset, args.eval_batch_size, info, False, args.seed, 0, args.workers, D.collate)
    imgs, recs, idx = [], [], []
    model.eval()
    for b in dl:
        with _amp_context(info, args.amp):
            imgs.append(model.embed_image(b["image"].to(info.device)).float())
            recs.append(model.embed_recipe(_recipe_inputs(model, b["recipe"], tokenizer, args, info.device))[0].float())
        idx.append(b["index"].to(info.device))
    i, r, k = (all_gather_tensors(torch.cat(x)) for x in (imgs, recs, idx))
    # DistributedSampler pads by repeating samples: keep one row per pair, in dataset order.
    order = {}
    for pos, key in enumerate(k.tolist()):
        order.setdefault(key, pos)
    keep = torch.tensor([order[j] for j in sorted(order)], device=i.device)
    return i[keep].cpu().numpy(), r[keep].cpu().numpy()


def run_retrieval(args) -> dict:
    info = init_distributed(args.device)
    seed_everything(args.seed + info.rank)
    runner = Runner(args, info)
    recipes = D.recipe1m_recipes(args.data, args.split, args.images)
    if args.val_split == "holdout":
        train_r, val_r = [], []
        from .utils import stable_fraction

        for r in recipes:
            (val_r if stable_fraction(r.id, args.seed) < args.val_fraction else train_r).append(r)
    else:
        train_r = recipes
        val_r = D.recipe1m_recipes(args.data, args.val_split, args.images)
    resume = load_checkpoint(args.resume) if args.resume else None
    if resume is not None:
        cfg, tokenizer = resume["model_config"], tokenizer_from_str(resume["tokenizer"])
    else:
        texts = [r.text() for r in train_r]
        tokenizer = make_tokenizer(args.text_model, texts, args.vocab_size)
        cfg = {
            "image_model": args.image_model,
            "image_size": args.image_size,
            "hub_name": args.hub_name,
            "recipe_encoder": args.recipe_encoder,
            "text_model": args.text_model,
            "text_pooling": args.text_pooling,
            "vocab_size": tokenizer.get_vocab_size(),
            "dim": args.dim,
            "ht_dim": args.ht_dim,
            "ht_heads": args.ht_heads,
            "ht_layers": args.ht_layers,
            "ht_out_dim": args.ht_out_dim,
            "ht_max_tokens": args.ht_max_tokens,
            "max_length": args.max_length,
        }
    model = build_retrieval(cfg, args.pretrained and resume is None).to(info.device)
    if args.freeze_image:
        model.image.requires_grad_(False)
    opt = _optimizer(model, args)
    start_epoch, step, best = 0, 0, -1.0
    if resume is not None:
        _resume(args.resume, model, opt)
        start_epoch, step, best = resume["epoch"] + 1, resume["step"], resume.get("best", -1.0)
    # The H-T component maps only get gradients from the component loss.
    unused = model.recipe_kind == "ht" and args.component_w <= 0
    ddp_model = DDP(model, find_unused_parameters=unused) if info.distributed else model
    spec = model.image.spec
    if info.main:
        print(f"retrieval: {len(train_r)} train / {len(val_r)} val recipes, recipe encoder {cfg['recipe_encoder']}")
    steps_per_epoch = max(1, len(train_r) // max(1, info.world) // args.batch_size // max(1, args.accum))
    if args.max_batches:
        steps_per_epoch = min(steps_per_epoch, max(1, args.max_batches // max(1, args.accum)))
    total = steps_per_epoch * args.epochs
    aw = AngleWeights(args.cosine_w, args.ibn_w, args.angle_w, args.cosine_tau, args.ibn_tau, args.angle_tau)

    def loss_fn(b):
        m = ddp_model
        img, (rec, comps) = _forward_pair(m, b, tokenizer, args, info.device)
        if args.loss == "triplet":
            loss = triplet_loss(img, rec, args.margin)
        else:
            loss = info_nce_loss(img, rec, args.temperature)
        if comps is not None and args.component_w > 0:
            loss = loss + args.component_w * recipe_component_loss(comps, model.component_maps, args.margin)
        if args.angle_aux_w > 0 and model.recipe_kind == "text":
            titles = encode_texts(tokenizer, [r.title for r in b["recipe"]], args.max_length, info.device)
            q = model.recipe(**titles)
            d = model.recipe(**_recipe_inputs(model, b["recipe"], tokenizer, args, info.device))
            loss = loss + args.angle_aux_w * angle_objective(q, d, torch.ones(q.shape[0], device=q.device), aw)
        return loss

    def payload(epoch, metrics):
        return checkpoint_payload("retrieval", cfg, tokenizer, model, opt, args, epoch, step, best, metrics)

    metrics = {}
    val_ds = D.RecipeImageDataset(val_r, EvalTransform(spec), train=False)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        torch.manual_seed(epoch_seed(args.seed, epoch, info.rank))
        ds = D.RecipeImageDataset(train_r, TrainTransform(spec, None, args.randaug), train=True, seed=args.seed)
        ds.set_epoch(epoch)
        loader = _loader(ds, args.batch_size, info, True, args.seed, epoch, args.workers, D.collate)
        loss, step = _train_steps(ddp_model, opt, loader, loss_fn, args, info, step, total, f"epoch {epoch + 1}")
        img, rec = embed_pairs(model, val_ds, tokenizer, args, info)
        metrics = retrieval_metrics(img, rec, args.bag_size, args.bags, args.seed)
        row = {"epoch": epoch + 1, "step": step, "train_loss": round(loss, 5)}
        row.update({f"val_{k}": round(v, 3) for k, v in metrics.items()})
        row["seconds"] = round(time.time() - t0, 2)
        runner.log.write(row)
        if info.main and not args.quiet:
            print(json.dumps(row))
        score = metrics["i2r_R@1"] + metrics["r2i_R@1"]
        if score > best:
            best = score
            runner.save("best.pt", payload(epoch, metrics))
        runner.save("last.pt", payload(epoch, metrics))
        runner.barrier()
        if args.stop_after and epoch + 1 - start_epoch >= args.stop_after:
            break
    if args.epochs == 0 or start_epoch >= args.epochs:
        runner.save("last.pt", payload(max(start_epoch, args.epochs) - 1, metrics))
    runner.digest(model)
    return metrics


def _forward_pair(m, b, tokenizer, args, device):
    """Runs both towers through the (possibly DDP-wrapped) model's forward."""
    rec_inputs = _recipe_inputs(_unwrap(m), b["recipe"], tokenizer, args, device)
    return m(b["image"].to(device), rec_inputs)
