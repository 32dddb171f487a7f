import pytest
from mmengine.config import ConfigDict

from tasks.mm_config import check_input_size, leaf_dataset, plain, without_pretrained
from tasks.scenes import SceneSpec
from zaqbench.errors import UserError


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


@pytest.mark.parametrize("size, ok", [((32, 64), True), ((128, 128), True), ([64, 96], True), ((28, 64), False),
                                      ((66, 64), False), ((64,), False), ("64", False), ((64.0, 64), False),
                                      ((True, 64), False)])
def test_one_input_size_rule_for_det_seg_and_their_scenes(size, ok):
    """Multiples of 4 (what the generator produces), at least 32 (a backbone's coarsest stride)."""
    if ok:
        assert check_input_size(size) == tuple(size)
        return
    with pytest.raises(UserError, match=r"task\.input_size"):
        check_input_size(size)


def test_scenes_use_the_same_rule():
    with pytest.raises(UserError, match=r"scene size \(task\.data\.spec\.size\) 28x28 cannot be generated"):
        SceneSpec(size=28, min_scale=4, max_scale=28).check()


def test_leaf_dataset_is_under_the_wrappers():
    leaf = dict(type="CocoDataset", ann_file="a.json")
    assert leaf_dataset(dict(type="RepeatDataset", times=2, dataset=dict(type="ClassBalancedDataset",
                                                                          dataset=leaf))) is leaf
