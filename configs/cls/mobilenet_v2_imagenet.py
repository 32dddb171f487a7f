# torchvision's MobileNetV2 with its ImageNet-1k weights, evaluated on an ImageNet-style folder:
#   tools/run_task.py --task cls --model mobilenet_v2_imagenet --checkpoint mobilenet_v2-b0353104.pth \
#       --data-root /data/imagenet --device cuda
# --data-root holds val/<class>/*.JPEG (and train/<class>/* for real-ptq); class folders are named by
# WordNet id (n01440764) or ImageNet class name (tench) and mapped onto the model's 1000 indices, so
# a subset of the classes is fine. The checkpoint is a plain state dict: it loads weights-only.
# Evaluation is torchvision's: resize 256, centre crop 224, ImageNet mean/std; streamed, any size.
_base_ = ['../_base_/imagenet_cls.py']
task = dict(
    model=dict(arch='mobilenet_v2'),
    # the last block at each resolution (56, 28, 14, 7): what the automatic choice finds, written out
    features=['features.3', 'features.6', 'features.13', 'features.18'],
    teacher=dict(weight_decay=4e-5),
)
