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
       --config.data.max_length=256 --config.kd.vocab_size=151936 \
       --topology v6e:2x4 --mesh fsdp=8 --json ;;
esac
# GKD (Study A data-size grid, 1B student, 70B teacher): the train step and the on-policy
# sampler program with its KV cache, on v5p:4x4x4.
if [ "$1" = gkd ]; then
  python -m kd_jax.main plan \
    --config configs/study_a_data_size.py:student=llama1b,method=gkd,size=10k,teacher=sft70b \
    --config.student.hf_path= --config.teacher.hf_path= --config.data.train= \
    --config.data.tokenizer= --topology v5p:4x4x4 --mesh fsdp=64 --json
fi
# Study A stage 1: the 70B teacher writes synthetic data (`kd-jax synthesize`), 32 prompts of
# 1,024 tokens and 1,024 new tokens a batch, weights over fsdp=16 x tensor=4 (about 7 min).
if [ "$1" = synth ]; then
  python -m kd_jax.main plan --config configs/study_a_data_size.py --config.teacher.hf_path= \
    --config.teacher.preset=llama-3.1-70b --job synthesize --topology v5p:4x4x4 \
    --mesh fsdp=16,tensor=4 --batch-size 32 --prompt-length 1024 --max-new-tokens 1024
fi
# Attention temporaries, 8B layer at 8,192 tokens a row: splash vs xla.
if [ "$1" = attention ]; then
  python benchmarks/attention_tpu_memory.py --topology v5p:2x2x1 --length 8192
fi
