# FCN (a second segmentor family: plain conv head, no ASPP) with the same small
# dilated ResNetV1c-18 on the 128x128 Fashion-MNIST scenes.
_base_ = ['./_scenes.py']

model = dict(
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
        loss_decode={{_base_.loss_decode}}))
