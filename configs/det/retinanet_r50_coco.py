# The stock mmdet RetinaNet R50-FPN 1x on COCO, for users with COCO and the official
# checkpoint:
#   tools/run_task.py --task det --model retinanet_r50_coco --data-root data/coco \
#       --checkpoint retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth --trust-checkpoint
# (official OpenMMLab checkpoints carry numpy objects in their meta, hence --trust-checkpoint).
# Nothing is downloaded: the ImageNet init is dropped. Backbone BN is left trainable,
# which changes nothing when the official weights are loaded.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', '../_base_/zaq_stable.py']

model = dict(backbone=dict(init_cfg=None, frozen_stages=-1, norm_eval=False))

task = dict(
    type='det',
    features=['neck'],  # the FPN outputs P3-P7
    input_size=(512, 512),  # generated images; evaluation keeps the stock 1333x800 pipeline
    data=dict(scenes=False),  # the config's COCO dataset: needs --data-root
    eval=dict(max_samples=None),
    teacher=dict(seed=0, log_interval=50),
)
quant = dict(preset='default', first_fp=True, last_fp=False,
             fp_layers=['bbox_head.retina_cls', 'bbox_head.retina_reg'])
default_methods = ['fp', 'ptq', 'real-ptq', 'zeroq', 'zaq', 'dfq', 'gdfq', 'dfq+zaq']
methods = dict(
    ptq=dict(batch_size=4, calib_batches=8),
    zeroq=dict(batch_size=4, calib_batches=2, distill_iters=200),
    zaq=dict(iters=500, batch_size=4, checkpoint_interval=50, calib_batches=8),
    dfq=dict(batch_size=4, calib_batches=8),
    gdfq=dict(iters=1500, batch_size=4, checkpoint_interval=50, calib_batches=8),  # ~ZAQ's compute
    **{'real-ptq': dict(batch_size=4, calib_batches=8),
       'dfq+zaq': dict(iters=500, batch_size=4, checkpoint_interval=50, calib_batches=8)},
)
