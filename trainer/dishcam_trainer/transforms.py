"""Image preprocessing that matches dishcam's runtime, training augmentation, mixup and cutmix."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

_PIL_FILTER = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
_TV_FILTER = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}


@dataclass
class PreprocessSpec:
    """The runtime's `[image_encoder.preprocess]`: pixel `p` becomes `(p * range / 255 - mean) / std`
    after a centred square crop of side `crop_fraction * shorter side` resized to `size`."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    range: float = 1.0
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> PreprocessSpec:
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return PreprocessSpec(**d)


def to_tensor_normalised(img: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    a = np.asarray(img, dtype=np.float32)
    a = a * (spec.range / 255.0)
    a = (a - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


class EvalTransform:
    """Centre crop + resize in one PIL call (the box form, no intermediate crop) + normalise: the
    same arithmetic as dishcam's `Preprocess`, so accuracy measured here is the runtime's."""

    def __init__(self, spec: PreprocessSpec, size: int | None = None):
        self.spec = spec
        self.size = size or spec.size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        s = self.spec.crop_fraction * min(w, h)
        left, top = (w - s) / 2, (h - s) / 2
        img = img.resize(
            (self.size, self.size), _PIL_FILTER[self.spec.interpolation], box=(left, top, left + s, top + s)
        )
        return to_tensor_normalised(img, self.spec)


class TrainTransform:
    """Random resized crop, horizontal flip, optional RandAugment, normalise."""

    def __init__(self, spec: PreprocessSpec, size: int | None = None, randaug_magnitude: float = 0.0):
        self.spec = spec
        self.size = size or spec.size
        ops = [
            T.RandomResizedCrop(self.size, scale=(0.35, 1.0), interpolation=_TV_FILTER[spec.interpolation]),
            T.RandomHorizontalFlip(),
        ]
        if randaug_magnitude > 0:
            # Magnitudes are on the TF RandAugment scale used by EfficientNetV2, where 10 is each
            # op's full strength (_MAX_LEVEL); torchvision indexes 31 bins from 0 to full strength.
            # TF extrapolates past 10 (M and L reach 15 and 20); torchvision cannot, so those saturate.
            level = round(min(randaug_magnitude / 10.0, 1.0) * 30)
            ops.append(T.RandAugment(num_ops=2, magnitude=level, num_magnitude_bins=31))
        self.ops = T.Compose(ops)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_tensor_normalised(self.ops(img), self.spec)


def mix_batch(
    images: torch.Tensor,
    targets: torch.Tensor,
    classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (one of them per batch, chosen at random when both are on).

    Returns mixed images and soft targets (rows summing to 1). With both alphas 0 the batch is
    returned unchanged with one-hot targets.
    """
    onehot = torch.nn.functional.one_hot(targets, classes).float()
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, onehot
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], generator=generator)
    if use_cutmix:
        _, _, h, w = images.shape
        cut = (1 - lam) ** 0.5
        ch, cw = int(h * cut), int(w * cut)
        cy = int(torch.randint(0, h, (1,), generator=generator))
        cx = int(torch.randint(0, w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        images = images.clone()
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        images = lam * images + (1 - lam) * images[perm]
    return images, lam * onehot + (1 - lam) * onehot[perm]
