# ResNet-20 (CIFAR-style) on real Fashion-MNIST images: the classification default.
task = dict(
    type="cls",
    model=dict(arch="resnet20", num_classes=10, in_channels=1),
    data=dict(image_size=28),
    features=["layer1", "layer2", "layer3"],
    teacher=dict(epochs=6, batch_size=128, lr=0.1, weight_decay=5e-4, seed=0),
    eval=dict(batch_size=1000),
)
quant = dict(preset="default")
default_methods = ["fp", "ptq", "real-ptq", "zeroq", "zaq", "zaq-no-feat", "zaq-no-act"]
# CPU-sized schedule. Every other knob keeps the paper's default (zaqbench/engine.py ZAQConfig),
# except three measured on this 2-core CPU (README, "ZAQ on a CPU budget"): with only tens of
# iterations, Q's BN statistics drifting to the generator's images (q_bn_update=True) and the
# official q_lr=0.1 both destroy the pre-trained Q, and re-setting activation ranges on the trained
# generator's images loses accuracy on real data; spatial relation maps are pooled to 14x14.
zaq_cpu = dict(iters=40, batch_size=32, q_lr=0.001, q_bn_update=False, recalibrate_at_end=False,
               relation_pool_size=14, checkpoint_interval=10, calib_batches=4)
methods = dict(
    ptq=dict(batch_size=128, calib_batches=4),
    zeroq=dict(batch_size=64, calib_batches=1, distill_iters=200),
    zaq=zaq_cpu,
    **{"real-ptq": dict(batch_size=128, calib_batches=4), "zaq-no-feat": zaq_cpu, "zaq-no-act": zaq_cpu},
)
