#!/usr/bin/env bash
#
# Runs one `kd-jax` command (train, sweep, eval, ...) on every worker of a Cloud TPU VM
# slice, as one JAX program: creates the slice if it does not exist, copies this checkout
# to every worker and installs it, then starts the command on all workers at once.
#
# Usage:
#   ZONE=us-east5-a ACCELERATOR_TYPE=v5p-64 launch/tpu_vm.sh TPU_NAME \
#       train --config configs/FILE.py[:arg] [--config.key=value ...] --workdir /mnt/runs/NAME
#
# Environment:
#   ZONE              (required) the slice's zone
#   ACCELERATOR_TYPE  e.g. v5p-64, v5litepod-64, v6e-64; needed only to create the slice
#   RUNTIME_VERSION   TPU VM image to create with (default: v2-alpha-tpuv5)
#   PROJECT           GCP project (default: gcloud's configured project)
#   SPOT=1            create the slice on spot capacity (kd-jax resumes after preemption)
#   INSTALL=0         skip copying and installing this checkout (already on the workers)
#   PYTHON            the workers' interpreter for the venv (default: python3); JAX needs
#                     Python >= 3.11, which older TPU VM images lack (install it in SETUP)
#   SETUP             a command run on every worker before installing, e.g. mounting the
#                     shared filesystem that holds the workdir, data and models
#   DETACH=1          start the command under nohup (log: ~/kd_jax/kd-jax.log on each worker)
#                     and return; otherwise it runs attached to this terminal
#   DRY_RUN=1         print the gcloud commands instead of running them
#
# Every worker must see the same workdir, data and model paths (a Filestore/NFS mount or a
# gcsfuse mount set up by SETUP): process 0 writes metrics and config, every process
# writes its shards of each Orbax checkpoint. Each worker gets the explicit coordinator
# that kd_jax.sharding.initialize_distributed reads (worker 0's internal IP, the worker
# count, and the worker's own number from the metadata server).
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: ZONE=... launch/tpu_vm.sh TPU_NAME train --config FILE --workdir DIR [...]" >&2
  exit 2
fi
: "${ZONE:?set ZONE, the zone of the TPU slice}"
name="$1"
shift
runtime="${RUNTIME_VERSION:-v2-alpha-tpuv5}"
port=8476
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$ZONE")
if [ -n "${PROJECT:-}" ]; then
  where+=(--project "$PROJECT")
fi

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$1"
}

# 1. Reuse the slice, or create it.
if [ "${DRY_RUN:-0}" = 1 ] || "${gcloud_tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
  echo "tpu_vm.sh: using TPU VM $name in $ZONE" >&2
else
  : "${ACCELERATOR_TYPE:?TPU VM $name does not exist; set ACCELERATOR_TYPE to create it}"
  create=(create "$name" "${where[@]}" --accelerator-type "$ACCELERATOR_TYPE" --version "$runtime")
  if [ "${SPOT:-0}" = 1 ]; then
    create+=(--spot)
  fi
  run "${gcloud_tpu[@]}" "${create[@]}"
fi

# 2. The coordinator: worker 0's internal address; one process per worker.
if [ "${DRY_RUN:-0}" = 1 ]; then
  ips="WORKER0_IP;WORKER1_IP"
else
  ips="$("${gcloud_tpu[@]}" describe "$name" "${where[@]}" \
    --format='value(networkEndpoints.ipAddress)')"
fi
IFS=';' read -r -a workers <<< "$ips"
echo "tpu_vm.sh: ${#workers[@]} workers, coordinator ${workers[0]}:$port" >&2

# 3. Install this checkout (tracked and untracked files, no venv or runs) on every worker.
if [ -n "${SETUP:-}" ]; then
  on_all_workers "$SETUP"
fi
if [ "${INSTALL:-1}" = 1 ]; then
  tarball="$(mktemp -t kd_jax.XXXXXX.tgz)"
  trap 'rm -f "$tarball"' EXIT
  run tar -czf "$tarball" -C "$repo" --exclude=.venv --exclude=runs --exclude=.git .
  run "${gcloud_tpu[@]}" scp "$tarball" "$name:kd_jax.tgz" "${where[@]}" --worker=all
  # Ubuntu images ship python3 without its venv module; apt brings it when missing.
  python="${PYTHON:-python3}"
  on_all_workers "mkdir -p ~/kd_jax && tar -xzf ~/kd_jax.tgz -C ~/kd_jax \
&& { $python -m venv ~/kd_jax/.venv || { sudo apt-get update -q \
&& sudo apt-get install -y -q $python-venv && $python -m venv ~/kd_jax/.venv; }; } \
&& ~/kd_jax/.venv/bin/pip install -q -e ~/kd_jax 'jax[tpu]'"
fi

# 4. The command on every worker at once; each reads its own number from the metadata
# server, so one command line serves all of them.
metadata="http://metadata.google.internal/computeMetadata/v1/instance/attributes"
env_line="KD_JAX_COORDINATOR=${workers[0]}:$port KD_JAX_NUM_PROCESSES=${#workers[@]}"
env_line+=" KD_JAX_PROCESS_ID=\$(curl -s -H Metadata-Flavor:Google $metadata/agent-worker-number)"
kd_jax_cmd="$(printf ' %q' "$@")"
remote="cd ~/kd_jax && export $env_line && "
if [ "${DETACH:-0}" = 1 ]; then
  remote+="nohup .venv/bin/kd-jax$kd_jax_cmd > ~/kd_jax/kd-jax.log 2>&1 &"
else
  remote+="exec .venv/bin/kd-jax$kd_jax_cmd"
fi
on_all_workers "$remote"
