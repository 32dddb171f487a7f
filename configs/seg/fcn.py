# FCN (a second segmentor family: plain conv head, no ASPP) with the same small
# dilated ResNetV1c-18 on the 128x128 Fashion-MNIST scenes.
_base_ = ['./_scenes.py']

model = dict(
    type='EncoderDecoder',
    data_preprocessor={{_base_.data_preprocessor}},
    pretrained=None,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=16,
        base_channels=16,  # stages: 16, 32, 64, 128 channels
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        # output stride 16 (8x8 logits at 128x128): on this CPU, width buys more
        # mIoU per second than the stock output stride 8
        dilations=(1, 1, 1, 2),
        strides=(1, 2, 2, 1),
        norm_cfg={{_base_.norm_cfg}},
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=None),
    decode_head=dict(
        type='FCNHead',
        in_channels=128,
        in_index=3,
        channels=64,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes={{_base_.num_classes}},
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode={{_base_.loss_decode}}),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

task = dict(features=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'])

# CPU-sized budgets (the core supplies every other knob with the paper's defaults).
# With the core's default generator (128 channels at every upsampling stage) one
# ZAQ iteration at batch 8 takes ~9 s on one core of this machine.
methods = dict(
    zaq=dict(batch_size=8, iters=50),
    ptq=dict(batch_size=16, calib_batches=4),
    zeroq=dict(batch_size=16, distill_iters=200),
    **{'real-ptq': dict(batch_size=16, calib_batches=4)})
