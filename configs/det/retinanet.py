# A small RetinaNet on 128x128 Fashion-MNIST scenes: the detection default.
# ResNet-18 at 3/8 width (24-48-96-192 channels), FPN P3-P5 with 48 channels,
# a 2-conv head (~150 MMAC per image); sized so the teacher trains on a 2-core
# CPU in minutes (3 epochs over 4000 scenes).
# Backbone BN layers are trained (norm_eval=False), so BN-statistics methods
# (ZeroQ) have real statistics to match.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './_base_/scenes_coco.py']

model = dict(
    backbone=dict(depth=18, base_channels=24, out_indices=(1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[48, 96, 192], out_channels=48, start_level=0, add_extra_convs=False, num_outs=3),
    bbox_head=dict(
        num_classes=10, in_channels=48, feat_channels=48, stacked_convs=2,
        # items are 6-56 px: anchors of 16-101 px on strides 8-32
        anchor_generator=dict(octave_base_scale=2, strides=[8, 16, 32])),
)


task = dict(
    type='det',
    features=['neck'],  # the FPN outputs P3-P5
    input_size=(128, 128),
    data=dict(scenes=True, num_train=4000, num_val=1000, seed=0, spec=dict(size=128)),
    eval=dict(max_samples=None),
    # threads: the CPU threads the teacher trains with on any machine (1 gave the 0.370 teacher
    # behind results/det.csv; 2 give 0.341)
    teacher=dict(seed=0, log_interval=50, threads=1),
)
# The final classification / box-regression convs emit the scores and box deltas
# directly (the detector's "last layer") and are tiny; the stem conv sees raw pixels.
quant = dict(preset='default', first_fp=True, last_fp=False,
             fp_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'])
