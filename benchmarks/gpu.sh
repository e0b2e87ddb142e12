#!/usr/bin/env bash
# Every accelerator measurement of the issue "Accelerators", one command per part, JSON lines out.
#
#   bash benchmarks/gpu.sh routes [OUT_DIR]   # benchmarks/conv_routes.py, float32 and bfloat16
#   bash benchmarks/gpu.sh steps [OUT_DIR]    # benchmarks/step.py: CCNN-4,140 on sMNIST (batch
#                                             # 100) and CIFAR10 (batch 64), cropped and uncropped,
#                                             # forward and training step, float32 and bfloat16
#   bash benchmarks/gpu.sh reference CCNN_DIR HARNESS [OUT_DIR]
#                                             # the PyTorch CCNN reference, same cases, same GPU
#
# The reference (the official code, github.com/david-knigge/ccnn, and our harness around it) is
# kept outside the repository, in the git-ignored .ref/ of a developer's checkout (.ref/README.txt
# says where it came from); on the device machine name it in `carry`:
#   carry [".ref/ccnn", ".ref/harness.py"]; command: bash benchmarks/gpu.sh reference .ref/ccnn
#   .ref/harness.py
#
# OUT_DIR defaults to $OUT (the device machine's return folder), else benchmarks/results. Files
# are named after the part, the device kind and the UTC date. Runs from the repository root with
# the machine's own jax/flax/optax (PYTHONPATH=.; the C++ routes are CPU-only and not needed).
#
# MFU: model FLOPs (the cost model's, 3x the forward for a training step) per second over the
# chip's dense peak in the dtype measured; the peaks are the vendor's stated dense figures
# (H100/H200 SXM: 989.4 TFLOP/s bfloat16, 494.7 TF32 — JAX runs float32 matmuls on GPUs as TF32
# by default). Another chip: set PEAK_BF16 and PEAK_F32 (TFLOP/s) in the environment.
set -euo pipefail
part=${1:?usage: bash benchmarks/gpu.sh routes|steps|reference ...}
shift
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
kind=$(python -c "import jax; print(jax.devices()[0].device_kind)")
tag=$(echo "$kind" | tr 'A-Z ' 'a-z_' | tr -cd 'a-z0-9_-')_$(date -u +%Y-%m-%d)
case "$kind" in
  *H100* | *H200*) peak_bf16=${PEAK_BF16:-989.4}; peak_f32=${PEAK_F32:-494.7} ;;
  *) peak_bf16=${PEAK_BF16:-}; peak_f32=${PEAK_F32:-} ;;
esac

case "$part" in
  routes)
    out=${1:-${OUT:-benchmarks/results}}
    file=$out/conv_routes_$tag.jsonl
    for dtype in float32 bfloat16; do
      python benchmarks/conv_routes.py --dtype "$dtype" --runs 10 | tee -a "$file"
    done
    ;;
  steps)
    out=${1:-${OUT:-benchmarks/results}}
    file=$out/step_$tag.jsonl
    for dtype in float32 bfloat16; do
      peak=$([ "$dtype" = bfloat16 ] && echo "$peak_bf16" || echo "$peak_f32")
      python benchmarks/step.py --runs 20 --dtype "$dtype" ${peak:+--peak_tflops "$peak"} \
        | tee -a "$file"
    done
    ;;
  reference)
    ccnn=${1:?the official CCNN code (github.com/david-knigge/ccnn), checked out}
    harness=${2:?the harness script that times it (kept outside this repository)}
    out=${3:-${OUT:-benchmarks/results}}
    PYTHONPATH=$ccnn python "$harness" --runs 20 --case-timeout 120 \
      | tee -a "$out/reference_pytorch_ccnn_$tag.jsonl"
    ;;
  *)
    echo "benchmarks/gpu.sh: unknown part '$part'; use routes, steps or reference" >&2
    exit 2
    ;;
esac
