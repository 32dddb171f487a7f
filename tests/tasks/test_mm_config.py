from mmengine.config import ConfigDict

from tasks.mm_config import plain, without_pretrained


def test_plain_keeps_tuples_that_mmcv_transforms_need():
    cfg = ConfigDict(pipeline=[dict(type="RandomResize", scale=(2048, 1024), ratio_range=(0.5, 2.0))])
    out = plain(cfg)
    assert type(out) is dict and type(out["pipeline"][0]) is dict
    assert out["pipeline"][0]["scale"] == (2048, 1024)  # a list here makes mmcv's RandomResize raise


def test_without_pretrained_drops_every_download_and_keeps_the_rest():
    cfg = dict(pretrained="open-mmlab://x", backbone=dict(
        depth=18, strides=(1, 2), init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18")),
        head=dict(init_cfg=[dict(type="Normal", std=0.01)]))
    out = without_pretrained(cfg)
    assert out["pretrained"] is None and out["backbone"]["init_cfg"] is None
    assert out["backbone"]["strides"] == (1, 2) and out["head"] == cfg["head"]
    assert cfg["backbone"]["init_cfg"]["type"] == "Pretrained"  # the input is not modified
