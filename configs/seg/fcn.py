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

task = dict(features=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'])

# CPU-sized budget. Beyond batch size and length: a 32-channel generator and relation maps
# pooled to 16x16 (measured 2.3 s instead of 8.8 s per iteration at batch 8, one core), and, as for
# classification and detection, frozen BN statistics, q_lr=1e-3 and no recalibration on generated
# images at the end (the official lr and BN updates wipe out a pre-trained model in a few iterations).
zaq_cpu = dict(batch_size=8, iters=40, generator_channels=32, relation_pool_size=16, q_lr=0.001,
               q_bn_update=False, recalibrate_at_end=False, checkpoint_interval=10)
methods = dict(
    zaq=zaq_cpu,
    ptq=dict(batch_size=16, calib_batches=4),
    zeroq=dict(batch_size=16, distill_iters=200),
    **{'real-ptq': dict(batch_size=16, calib_batches=4), 'zaq-no-feat': zaq_cpu, 'zaq-no-act': zaq_cpu})
