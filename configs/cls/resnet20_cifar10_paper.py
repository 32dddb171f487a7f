# Paper-scale run (ZAQ, CVPR 2021, Table 1): CIFAR-10 ResNet-20, W4A4, 300 epochs x 60
# iterations at batch 256, with the official quantizer. For users with CIFAR-10 and a GPU:
#   tools/run_task.py --task cls --model resnet20_cifar10_paper --data-root /data/cifar10 \
#       --checkpoint resnet20_cifar10.pth --device cuda --methods fp,ptq,zeroq,zaq
# (--data-root holds torchvision's cifar-10-batches-py; without --checkpoint a teacher is trained.)
# The official code's loop is the method 'zaq-official' (README "The official code, reproduced");
# the images are normalised as the official code's (its std, not CIFAR-10's measured one), so an
# official checkpoint given with --checkpoint sees the inputs it was trained on.
task = dict(
    type="cls",
    model=dict(arch="resnet20", num_classes=10, in_channels=3),
    data=dict(image_size=32, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010]),
    features=["layer1", "layer2", "layer3"],
    teacher=dict(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, seed=0),
    eval=dict(batch_size=1000),
)
quant = dict(preset="zaq-code")
default_methods = ["fp", "ptq", "real-ptq", "zeroq", "zaq", "zaq-official", "zaq-no-feat", "zaq-no-act", "dfq", "gdfq",
                   "dfq+zaq"]
zaq_paper = dict(iters=300 * 60, batch_size=256, q_steps=5, checkpoint_interval=600)
methods = dict(
    ptq=dict(batch_size=256, calib_batches=4),
    zeroq=dict(batch_size=256, calib_batches=1, distill_iters=500),
    zaq=zaq_paper,
    **{"real-ptq": dict(batch_size=256, calib_batches=4), "zaq-no-feat": zaq_paper, "zaq-no-act": zaq_paper,
       "dfq+zaq": zaq_paper, "zaq-official": zaq_paper, "real-kd": zaq_paper},
    # DFQ has no schedule (no data, no training); its activation ranges come from ptq's noise
    dfq=dict(batch_size=256, calib_batches=4),
    # GDFQ's GPU schedule (configs/README.md): 400 epochs x 200 iterations, G by Adam at 1e-3,
    # Q by SGD (momentum 0.9) at 1e-4; the CE/BNS/KD weights are the method's defaults
    gdfq=dict(iters=400 * 200, batch_size=256, q_lr=1e-4, g_lr=1e-3, lr_milestones=[], checkpoint_interval=1000),
)
