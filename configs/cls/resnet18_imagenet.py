# torchvision's ResNet-18 with its ImageNet-1k weights, evaluated on an ImageNet-style folder:
#   tools/run_task.py --task cls --model resnet18_imagenet --checkpoint resnet18-f37072fd.pth \
#       --data-root /data/imagenet --device cuda
# --data-root holds val/<class>/*.JPEG (and train/<class>/* for real-ptq); class folders are named by
# WordNet id (n01440764) or ImageNet class name (tench) and mapped onto the model's 1000 indices, so
# a subset of the classes is fine. The checkpoint is a plain state dict: it loads weights-only.
# Evaluation is torchvision's: resize 256, centre crop 224, ImageNet mean/std; streamed, any size.
_base_ = ['../_base_/zaq_stable.py']
task = dict(
    type='cls',
    model=dict(arch='resnet18', num_classes=1000, in_channels=3),
    data=dict(image_size=224, resize=256, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
              class_map='imagenet'),
    # the four stages (56, 28, 14, 7): what the automatic choice finds, written out
    features=['layer1', 'layer2', 'layer3', 'layer4'],
    teacher=dict(epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4, seed=0, workers=8),
    eval=dict(batch_size=100, workers=4, max_samples=None),
)
# Stem conv and classifier in FP, as in ZAQ's and ZeroQ's ImageNet protocol.
quant = dict(preset='default')
default_methods = ['fp', 'ptq', 'real-ptq', 'zeroq', 'zaq']
# GPU-sized budgets (224 px inputs); reduce iters / batch sizes for a CPU try.
zaq_imagenet = dict(iters=2000, batch_size=32, checkpoint_interval=200, calib_batches=8)
methods = dict(
    ptq=dict(batch_size=32, calib_batches=8),
    zeroq=dict(batch_size=32, calib_batches=2, distill_iters=500),
    zaq=zaq_imagenet,
    **{'real-ptq': dict(batch_size=32, calib_batches=8), 'zaq-no-feat': zaq_imagenet, 'zaq-no-act': zaq_imagenet},
)
