# The stock mmseg DeepLabV3 R50-D8 Cityscapes 512x1024 config, unchanged except
# that nothing is downloaded. For users with Cityscapes (labelTrainIds PNGs, see
# mmseg's dataset preparation) and the official checkpoint:
#
#   tools/run_task.py --task seg --model deeplabv3_r50_cityscapes \
#       --data-root data/cityscapes --checkpoint deeplabv3_r50-d8_512x1024_40k_cityscapes_*.pth \
#       --trust-checkpoint --device cuda
#
# (official checkpoints carry numpy objects in their meta, hence --trust-checkpoint).
# The stock SyncBN layers are reverted to BN by the adapter, so one process runs it.
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py', '../_base_/zaq_stable.py']

model = dict(pretrained=None)

task = dict(
    type='seg',
    input_size=(512, 1024),  # the stock training crop: what the generator produces
    features=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'],
    eval=dict(max_samples=None, workers=2),
    teacher=dict(seed=0, workers=2),
    data=dict(scenes=False, name='cityscapes'))

# Stem conv and the decode head's classifier in FP; the auxiliary FCN head
# (the last registered conv, unused at inference) is quantized like the rest.
quant = dict(preset='default', first_fp=True, last_fp=False, fp_layers=['decode_head.conv_seg'])
default_methods = ['fp', 'ptq', 'real-ptq', 'zeroq', 'zaq', 'dfq', 'gdfq', 'dfq+zaq']

# GPU-sized budgets: 512x1024 inputs on a ResNet-50 are far beyond a CPU.
methods = dict(
    zaq=dict(batch_size=4, iters=2000),
    ptq=dict(batch_size=4, calib_batches=8),
    zeroq=dict(batch_size=4, distill_iters=500),
    dfq=dict(batch_size=4, calib_batches=8),
    gdfq=dict(batch_size=4, iters=6000),  # ~ZAQ's compute: a GDFQ iteration is ~1/3 of ZAQ's
    **{'real-ptq': dict(batch_size=4, calib_batches=8), 'dfq+zaq': dict(batch_size=4, iters=2000)})
