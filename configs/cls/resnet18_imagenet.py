# torchvision's ResNet-18 with its ImageNet-1k weights, evaluated on an ImageNet-style folder:
#   tools/run_task.py --task cls --model resnet18_imagenet --checkpoint resnet18-f37072fd.pth \
#       --data-root /data/imagenet --device cuda
# --data-root holds val/<class>/*.JPEG (and train/<class>/* for real-ptq); class folders are named by
# WordNet id (n01440764) or ImageNet class name (tench) and mapped onto the model's 1000 indices, so
# a subset of the classes is fine. The checkpoint is a plain state dict: it loads weights-only.
# Evaluation is torchvision's: resize 256, centre crop 224, ImageNet mean/std; streamed, any size.
_base_ = ['../_base_/imagenet_cls.py']
task = dict(
    model=dict(arch='resnet18'),
    # the four stages (56, 28, 14, 7): what the automatic choice finds, written out
    features=['layer1', 'layer2', 'layer3', 'layer4'],
    teacher=dict(weight_decay=1e-4),
)
