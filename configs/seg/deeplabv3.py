# DeepLabV3 (ASPP head) with a small dilated ResNetV1c-18 (output stride 8) on
# the 128x128 Fashion-MNIST scenes: the seg task's default model, sized so the
# teacher trains on a 2-core CPU in a few minutes. BN layers are trained
# (norm_eval=False), so ZeroQ's BN-statistics baseline has real statistics.
_base_ = ['./_scenes.py']

model = dict(
    type='EncoderDecoder',
    data_preprocessor={{_base_.data_preprocessor}},
    pretrained=None,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=8,
        base_channels=8,  # stages: 8, 16, 32, 64 channels
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg={{_base_.norm_cfg}},
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=None),
    decode_head=dict(
        type='ASPPHead',
        in_channels=64,
        in_index=3,
        channels=32,
        dilations=(1, 3, 6, 9),  # on the 16x16 stride-8 map of a 128x128 input
        dropout_ratio=0.1,
        num_classes={{_base_.num_classes}},
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

task = dict(features=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'])

# CPU-sized budgets (the core supplies every other knob with the paper's defaults).
methods = dict(
    zaq=dict(batch_size=16, iters=200),
    ptq=dict(batch_size=16, calib_batches=4),
    zeroq=dict(batch_size=16, distill_iters=200),
    **{'real-ptq': dict(batch_size=16, calib_batches=4)})
