#!/usr/bin/env bash
# The GPU check: one prepared command, no network, sized for at most 8 minutes
# on one H200-class GPU. It has NOT been run on a GPU yet (none was lent when it was
# written); the budgets below are estimates, to be corrected by its first run.
#
#   tools/gpu_check.sh --prepare   # on a machine with the data: copy Fashion-MNIST into data_cache/
#                                  # (ignored by git) so it travels with the work tree
#   tools/gpu_check.sh             # on the GPU machine: rows in results/gpu/, speed and memory printed
#   tools/gpu_check.sh --smoke     # the same steps with tiny budgets, on any machine (CPU included)
#
# What it does, in order:
#   1. the ZAQ loop's speed and peak memory, fake-quant on and off (tools/benchmark_zaq.py,
#      ResNet-20, batch 256, 5 Q steps: the paper's loop);
#   2. the cls teacher (ResNet-20 / Fashion-MNIST) trained on the GPU, then fp, ptq and ZAQ W4A4
#      with the official code's loop (method zaq-official, quant preset zaq-code: SGD 0.1, steps at
#      1/3 and 2/3, no stabilisers, ranges widening on every forward; README "The official code,
#      reproduced") for as many iterations as fit in ZAQ_SECONDS at the speed measured in step 1
#      (printed, and in the row's iters column). One deviation: relation_guard=safe, since the
#      official normalisation's 1e12 gradient on all-zero feature vectors wrecks Q within a few
#      iterations on this teacher (relation_guard=exact stops there and says so);
#   3. the det and seg defaults (RetinaNet, DeepLabV3 on the scenes): teachers on the GPU, then
#      fp, ptq and ZAQ W4A4 with a GPU-sized budget (DETSEG_ITERS iterations at batch 64).
# Environment: GPU_CHECK_TASKS (default "cls det seg"), ZAQ_SECONDS (default 150),
# DETSEG_ITERS (default 300), GPU_CHECK_OUT (default results/gpu; smoke: work_dirs/gpu_check_smoke),
# GPU_CHECK_WORK (run folders, default work_dirs/gpu_check), ZAQBENCH_CACHE_GPU_CHECK (teachers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=data_cache/fashion-mnist

mode=full
for arg in "$@"; do
  case "$arg" in
    --smoke) mode=smoke ;;
    --prepare) mode=prepare ;;
    *) echo "error: unknown option '$arg'; use --prepare, --smoke or nothing" >&2; exit 2 ;;
  esac
done

if [ "$mode" = prepare ]; then
  src=$($PY -c "from tasks.fashion_mnist import find_fashion_mnist; print(find_fashion_mnist())")
  mkdir -p "$DATA" && cp "$src"/*-ubyte.gz "$DATA"/
  echo "copied Fashion-MNIST from $src to $DATA"
  exit 0
fi

if [ ! -f "$DATA/t10k-images-idx3-ubyte.gz" ] && [ -z "${ZAQBENCH_DATA:-}" ]; then
  if [ "$mode" = smoke ]; then
    ZAQBENCH_DATA=$($PY -c "from tasks.fashion_mnist import find_fashion_mnist; print(find_fashion_mnist())")
  else
    echo "error: no Fashion-MNIST in $DATA; run tools/gpu_check.sh --prepare where the data is, then carry data_cache/" >&2
    exit 2
  fi
fi
export ZAQBENCH_DATA=${ZAQBENCH_DATA:-$PWD/$DATA}
TASKS=${GPU_CHECK_TASKS:-cls det seg}

if [ "$mode" = full ]; then
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device is available here; tools/gpu_check.sh --smoke runs the same steps on the CPU" >&2
    exit 2
  fi
  DEVICE=cuda
  OUT=${GPU_CHECK_OUT:-results/gpu}
  ZAQ_SECONDS=${ZAQ_SECONDS:-150}
  BENCH=(--batch-size 256 --q-steps 5 --iters 10 --warmup 2 --repeats 1)
  CLS_SMALL=()
  DETSEG=(methods.zaq.iters=${DETSEG_ITERS:-300} methods.zaq.batch_size=64 methods.zaq.checkpoint_interval=100)
  DET_SMALL=() SEG_SMALL=()
else
  DEVICE=auto
  OUT=${GPU_CHECK_OUT:-work_dirs/gpu_check_smoke}
  ZAQ_SECONDS=${ZAQ_SECONDS:-1}
  BENCH=(--batch-size 8 --q-steps 1 --iters 1 --warmup 0 --repeats 1
         --cfg-options task.model.width=4 methods.zaq.generator_channels=16 methods.zaq.nz=16)
  CLS_SMALL=(task.model.width=4 task.data.image_size=16 task.teacher.epochs=1 task.teacher.max_samples=512
             task.eval.max_samples=256 methods.zaq-official.batch_size=8 methods.zaq-official.generator_channels=16
             methods.zaq-official.nz=16 methods.ptq.batch_size=16 methods.zaq-official.calib_batches=1)
  DETSEG=(methods.zaq.iters=1 methods.zaq.batch_size=2 methods.zaq.q_steps=1 methods.zaq.calib_batches=1
          methods.ptq.batch_size=2 methods.ptq.calib_batches=1 task.data.num_train=16 task.data.num_val=8
          task.eval.max_samples=8)
  DET_SMALL=(train_cfg.max_epochs=1) SEG_SMALL=(train_cfg.max_iters=2)
fi
export ZAQBENCH_CACHE=${ZAQBENCH_CACHE_GPU_CHECK:-$PWD/work_dirs/gpu_check_cache}  # teachers trained here, on this device
WORK=${GPU_CHECK_WORK:-work_dirs/gpu_check}
mkdir -p "$OUT"
COMMON=(--device "$DEVICE" --seeds 0 --bits 4 --work-dir "$WORK" --no-progress)

echo "== 1. ZAQ loop speed and memory ($mode)"
bench=$($PY tools/benchmark_zaq.py --task cls --model resnet20 --device "$DEVICE" "${BENCH[@]}")
echo "$bench"
it_per_s=$(echo "$bench" | awk -F'|' '/fake-quant on/ {gsub(/ /, "", $3); print $3}')
iters=$($PY -c "import math; print(max(2, math.floor($it_per_s * $ZAQ_SECONDS)))")

for task in $TASKS; do
  case "$task" in
    cls)
      echo "== 2. cls: teacher on $DEVICE, fp/ptq/ZAQ W4A4, paper loop for $iters iterations (${ZAQ_SECONDS}s at ${it_per_s} it/s)"
      m=methods.zaq-official
      official=($m.iters=$iters $m.batch_size=256 $m.q_steps=5 $m.q_optimizer=sgd $m.q_lr=0.1
                "$m.lr_milestones=[0.3333,0.6667]" $m.q_bn_update=True $m.recalibrate_at_end=False $m.gen_output=bn
                $m.bns_weight=0.0 $m.q_params=all $m.q_trust_steps=0.0 $m.relation_pool_size=32
                $m.act_ranges=every-forward $m.relation_guard=safe $m.checkpoint_interval=500)
      $PY tools/run_task.py --task cls --model resnet20 --methods fp,ptq,zaq-official --quant-preset zaq-code "${COMMON[@]}" \
          --out "$OUT/cls.csv" --cfg-options "${official[@]}" "${CLS_SMALL[@]}" ;;
    det)
      echo "== 3. det: RetinaNet teacher on $DEVICE, fp/ptq/ZAQ W4A4"
      $PY tools/run_task.py --task det --methods fp,ptq,zaq "${COMMON[@]}" --out "$OUT/det.csv" \
          --cfg-options "${DETSEG[@]}" "${DET_SMALL[@]}" ;;
    seg)
      echo "== 3. seg: DeepLabV3 teacher on $DEVICE, fp/ptq/ZAQ W4A4"
      $PY tools/run_task.py --task seg --methods fp,ptq,zaq "${COMMON[@]}" --out "$OUT/seg.csv" \
          --cfg-options "${DETSEG[@]}" "${SEG_SMALL[@]}" ;;
    *) echo "error: unknown task '$task' in GPU_CHECK_TASKS; use cls, det, seg" >&2; exit 2 ;;
  esac
done
echo "== rows in $OUT/"
