# The embedded detection data: Fashion-MNIST scenes in COCO format (tasks/scenes.py).
# data_root is filled in by the det adapter: the scene cache, or --data-root
# (any COCO-style folder with the same ann_file / data_prefix layout).
_base_ = ['../../_base_/zaq_stable.py']
dataset_type = 'CocoDataset'
data_root = None
metainfo = dict(classes=('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                         'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'))
backend_args = None

# Scenes are already 128x128: Resize keeps them so, but records the scale factor
# that mmdet's post-processing expects.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# num_workers=0: decoding a 128x128 PNG costs far less than the step; the 2 cores go to compute.
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline,
        backend_args=backend_args))
test_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
val_dataloader = test_dataloader
# ann_file is set by the adapter to the test dataset's own annotation file.
test_evaluator = dict(type='CocoMetric', metric='bbox', format_only=False, backend_args=backend_args)
val_evaluator = test_evaluator

# The teacher's schedule (mmengine Runner) for the small scene detectors.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=3, eta_min=1e-5, convert_to_iter_based=True),
]

# The methods' CPU budget, shared by the scene detectors (RetinaNet, FCOS).
default_methods = ['fp', 'ptq', 'real-ptq', 'zeroq', 'zaq', 'dfq', 'gdfq', 'dfq+zaq', 'real-kd']
# CPU-sized schedules; every other knob keeps the core's defaults (zaqbench/zaq/engine.py ZAQConfig).
# generator_channels=32: at 128x128 the default 128-channel generator costs ~2 GMAC per image,
# 13x the detector itself; 32 channels brings it to the detector's cost.
# The stabilisers and learning rate come from configs/_base_/zaq_stable.py, unchanged: nothing
# here is tuned to the detector.
zaq_cpu = dict(iters=40, batch_size=16, checkpoint_interval=10, calib_batches=4, generator_channels=32)
methods = dict(
    ptq=dict(batch_size=16, calib_batches=16),
    zeroq=dict(batch_size=16, calib_batches=2, distill_iters=100),
    zaq=zaq_cpu,
    **{'real-ptq': dict(batch_size=16, calib_batches=16), 'zaq-no-feat': zaq_cpu, 'zaq-no-act': zaq_cpu,
       'real-kd': zaq_cpu},
    # DFQ on ptq's noise; GDFQ in its label-free form (gdfq-bns) at ~ZAQ's compute
    dfq=dict(batch_size=16, calib_batches=16),
    gdfq=dict(iters=120, batch_size=16, checkpoint_interval=20, calib_batches=4, generator_channels=32),
    **{'dfq+zaq': zaq_cpu},
)
