# A small FCOS (anchor-free) on 128x128 Fashion-MNIST scenes: a second detector
# family, showing the det adapter and the core are not RetinaNet-specific.
# Same backbone and neck as configs/det/retinanet.py; GroupNorm head as in stock FCOS.
_base_ = ['./_base_/scenes_coco.py']

model = dict(
    type='FCOS',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, base_channels=24, num_stages=4, out_indices=(1, 2, 3),
                  frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                  style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[48, 96, 192], out_channels=48, start_level=0,
              add_extra_convs=False, num_outs=3),
    bbox_head=dict(
        type='FCOSHead', num_classes=10, in_channels=48, feat_channels=48, stacked_convs=2,
        strides=[8, 16, 32], regress_ranges=((-1, 16), (16, 32), (32, 1e8)),
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        norm_on_bbox=True, centerness_on_reg=True, center_sampling=True, conv_bias=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100),
)


task = dict(
    type='det',
    features=['neck'],
    input_size=(128, 128),
    data=dict(scenes=True, num_train=4000, num_val=1000, seed=0, spec=dict(size=128)),
    eval=dict(max_samples=None),
    teacher=dict(seed=0, log_interval=50, threads=1),  # threads: as retinanet.py
)
quant = dict(preset='default', first_fp=True, last_fp=False,
             fp_layers=['bbox_head.conv_cls', 'bbox_head.conv_reg', 'bbox_head.conv_centerness'])
