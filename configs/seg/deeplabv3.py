# DeepLabV3 (ASPP head) with a small dilated ResNetV1c-18 (output stride 16) on
# the 128x128 Fashion-MNIST scenes: the seg task's default model, sized so the
# teacher trains on a 2-core CPU in a few minutes. BN layers are trained
# (norm_eval=False), so ZeroQ's BN-statistics baseline has real statistics.
_base_ = ['./_scenes.py']

model = dict(
    decode_head=dict(
        type='ASPPHead',
        in_channels=128,
        in_index=3,
        channels=64,
        dilations=(1, 2, 3, 4),  # on the 8x8 stride-16 map of a 128x128 input
        dropout_ratio=0.1,
        num_classes={{_base_.num_classes}},
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode={{_base_.loss_decode}}))
