# A user model that is neither torchvision nor a CIFAR ResNet: examples/custom_cls_model.py
# registers the builder 'tiny_convnet' in tasks.models.CLS_MODELS; custom_imports loads it.
#   tools/run_task.py --task cls --model example_custom_model --methods fp,ptq --bits 8
# No task.features: the feature maps are chosen automatically and printed.
_base_ = ['./resnet20.py']
custom_imports = dict(imports=['examples.custom_cls_model'], allow_failed_imports=False)
task = dict(
    model=dict(_delete_=True, arch='tiny_convnet', num_classes=10, in_channels=1, kwargs=dict(width=16)),
    features=None,
    teacher=dict(epochs=2),
)
