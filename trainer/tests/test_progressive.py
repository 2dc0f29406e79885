import pytest

from dishcam_trainer.progressive import PRESETS, schedule, stage_for_epoch, stage_settings


def test_efficientnetv2_s_sizes_and_magnitudes():
    s = [stage_settings(PRESETS["efficientnet_v2_s"], i, 4) for i in range(4)]
    assert [x.image_size for x in s] == [171, 214, 257, 300]
    assert [x.randaug_magnitude for x in s] == pytest.approx([6.25, 7.5, 8.75, 10.0])
    assert all(x.mixup_alpha == 0 for x in s)
    assert s[-1].dropout == pytest.approx(0.3)


def test_stages_split_epochs_evenly_and_grow():
    assert [stage_for_epoch(e, 8, 4) for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    sched = schedule(PRESETS["efficientnet_v2_l"], epochs=10, stages=4)
    sizes = [s.image_size for s in sched]
    assert sizes == sorted(sizes) and sizes[-1] == 380
    assert sched[-1].mixup_alpha == pytest.approx(0.5) and sched[-1].randaug_magnitude == pytest.approx(20)
    assert len({s.index for s in schedule(PRESETS["efficientnet_v2_m"], epochs=2, stages=4)}) == 2
