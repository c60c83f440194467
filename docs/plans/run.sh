#!/usr/bin/env bash
# The TPU-compiled plans of docs/plans/README.md (no TPU needed; libtpu from the [tpu] extra).
set -euo pipefail
common=(--config configs/base.py --config.method=kd
  --config.student.dtype=bfloat16 --config.teacher.dtype=bfloat16
  --config.teacher.param_dtype=bfloat16
  --config.student.remat_policy=full --config.teacher.remat_policy=full)
a() {  # Study A: 70B teacher, 128 x 4096 on v5p:4x4x4
  python -m kd_jax.main plan "${common[@]}" --config.student.preset="$1" \
    --config.teacher.preset=llama-3.1-70b --config.data.batch_size=128 \
    --config.data.max_length=4096 --topology v5p:4x4x4 --mesh fsdp=64 --json
}
case "$1" in
  a1b) a llama-3.2-1b ;;
  a8b) a llama-3.1-8b ;;
  b) python -m kd_jax.main plan "${common[@]}" --config.student.preset=qwen2.5-0.5b \
       --config.teacher.preset=qwen2.5-14b --config.student.lora.enabled=True \
       --config.student.param_dtype=bfloat16 --config.data.batch_size=16 \
       --config.data.max_length=256 --topology v6e:2x4 --mesh fsdp=8 --json ;;
esac
