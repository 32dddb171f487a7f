# What torchvision's ImageNet-1k classifiers share: ImageNet normalisation, torchvision's evaluation
# transform (resize 256, centre crop 224), WordNet-id / class-name folders mapped onto the 1000
# indices, and GPU-sized method budgets. configs/cls/<model>_imagenet.py set the architecture, the
# features and the teacher recipe's weight decay.
_base_ = ['./zaq_stable.py']
task = dict(
    type='cls',
    model=dict(num_classes=1000, in_channels=3),
    data=dict(image_size=224, resize=256, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
              class_map='imagenet'),
    teacher=dict(epochs=90, batch_size=256, lr=0.1, seed=0, workers=8),
    eval=dict(batch_size=100, workers=4, max_samples=None),
)
# Stem conv and classifier in FP, as in ZAQ's and ZeroQ's ImageNet protocol.
quant = dict(preset='default')
default_methods = ['fp', 'ptq', 'real-ptq', 'zeroq', 'zaq']
# GPU-sized budgets (224 px inputs); reduce iters / batch sizes for a CPU try.
# returned_iterate='probe': the run returns the iterate, its calibrated start included, that is closest
# to P on BN-statistics-distilled images (a real model's start can be the best Q the run holds); a
# later iterate must be closer by 2 standard errors of the per-image differences (probe_z) to replace
# the kept one (docs/findings/imagenet_check.md: measured on one seed, not a guarantee).
zaq_imagenet = dict(iters=2000, batch_size=32, checkpoint_interval=200, calib_batches=8, returned_iterate='probe',
                    probe_z=2.0)
methods = dict(
    ptq=dict(batch_size=32, calib_batches=8),
    zeroq=dict(batch_size=32, calib_batches=2, distill_iters=500),
    zaq=zaq_imagenet,
    **{'real-ptq': dict(batch_size=32, calib_batches=8), 'zaq-no-feat': zaq_imagenet, 'zaq-no-act': zaq_imagenet,
       'real-kd': zaq_imagenet, 'dfq+zaq': zaq_imagenet},
    # every listed method has a GPU-sized budget here (without one GDFQ would take its CIFAR defaults)
    gdfq=dict(iters=2000, batch_size=32, checkpoint_interval=200, calib_batches=8),
)
