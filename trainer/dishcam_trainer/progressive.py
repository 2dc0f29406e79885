"""EfficientNetV2 progressive learning: image size and regularisation grow stage by stage.

The official implementation (automl/efficientnetv2) splits training into `stages` equal parts and,
for stage i = 0..stages-1, interpolates every quantity with ratio (i + 1) / stages between its
minimum and maximum. With S's 128 -> 300 px over 4 stages that gives 171, 214, 257, 300 px.
Ranges per model are those of the paper's Table 6 (RandAugment magnitude and mixup; S keeps
mixup off); dropout grows 0.1 -> 0.3/0.4/0.5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressiveRange:
    min_size: int
    max_size: int
    min_randaug: float
    max_randaug: float
    min_mixup: float = 0.0
    max_mixup: float = 0.0
    min_dropout: float = 0.1
    max_dropout: float = 0.3


PRESETS = {
    "efficientnet_v2_s": ProgressiveRange(128, 300, 5, 10, 0.0, 0.0, 0.1, 0.3),
    "efficientnet_v2_m": ProgressiveRange(128, 380, 5, 15, 0.0, 0.2, 0.1, 0.4),
    "efficientnet_v2_l": ProgressiveRange(128, 380, 5, 20, 0.0, 0.5, 0.1, 0.5),
}


@dataclass(frozen=True)
class Stage:
    index: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    dropout: float


def stage_settings(r: ProgressiveRange, stage: int, stages: int) -> Stage:
    ratio = (stage + 1) / stages

    def lerp(lo, hi):
        return lo + (hi - lo) * ratio

    return Stage(
        stage,
        int(lerp(r.min_size, r.max_size)),
        lerp(r.min_randaug, r.max_randaug),
        lerp(r.min_mixup, r.max_mixup),
        lerp(r.min_dropout, r.max_dropout),
    )


def stage_for_epoch(epoch: int, epochs: int, stages: int) -> int:
    """Epochs are split into `stages` near-equal consecutive parts."""
    stages = max(1, min(stages, epochs))
    return min(stages - 1, epoch * stages // max(epochs, 1))


def schedule(r: ProgressiveRange, epochs: int, stages: int = 4) -> list[Stage]:
    """The stage settings in force at each epoch."""
    n = max(1, min(stages, epochs))
    return [stage_settings(r, stage_for_epoch(e, epochs, n), n) for e in range(epochs)]
