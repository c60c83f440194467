#!/usr/bin/env bash
#
# Submits one `kd-jax` command (train, sweep, eval, ...) as a GKE workload through xpk:
# every pod of the slice runs the same command line, as one JAX program.
#
# Usage:
#   CLUSTER=my-cluster DEVICE_TYPE=v5p-64 launch/xpk.sh WORKLOAD \
#       train --config configs/FILE.py[:arg] [--config.key=value ...] --workdir /mnt/runs/NAME
#
# Environment:
#   CLUSTER       (required) the xpk/GKE cluster (`xpk cluster create ...`)
#   DEVICE_TYPE   (required) e.g. v5p-64, v6e-256 (TPU slices)
#   PROJECT, ZONE passed to xpk when set (default: gcloud's configuration)
#   DOCKER_IMAGE  an image with kd_jax installed (fastest start); otherwise
#   BASE_IMAGE    a Python >= 3.11 image (default: python:3.11) that xpk extends with a
#                 copy of this checkout (--script-dir; no .venv, runs or .git), which each
#                 pod installs before running
#   PRIORITY      xpk priority (default: medium); MAX_RESTARTS (default: 3): GKE restarts
#                 the workload after a preemption and kd-jax resumes from its checkpoint
#   XPK_ARGS      extra `xpk workload create` arguments, e.g. "--spot" or "--env KEY=VALUE"
#   DRY_RUN=1     print the xpk command instead of running it
#
# The workdir, data and model paths must be a volume every pod mounts (e.g. a GCS FUSE or
# Filestore volume attached with `xpk storage attach`): process 0 writes metrics and
# config, every process writes its shards of each Orbax checkpoint. On multi-host TPU
# slices GKE sets TPU_WORKER_HOSTNAMES, from which kd_jax.sharding.initialize_distributed
# starts JAX's distributed runtime; no coordinator needs to be passed. One slice only:
# kd_jax's mesh has no cross-slice (DCN) axis, and single-host slices would not join.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: CLUSTER=... DEVICE_TYPE=... launch/xpk.sh WORKLOAD train --config FILE [...]" >&2
  exit 2
fi
: "${CLUSTER:?set CLUSTER, the xpk cluster to run on}"
: "${DEVICE_TYPE:?set DEVICE_TYPE, e.g. v5p-64}"
workload="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The pod's command: one string, with every user argument quoted for the pod's shell.
kd_jax_cmd="kd-jax$(printf ' %q' "$@")"
xpk_cmd=(xpk workload create --cluster "$CLUSTER" --workload "$workload"
  --device-type "$DEVICE_TYPE" --num-slices 1
  --priority "${PRIORITY:-medium}" --max-restarts "${MAX_RESTARTS:-3}")
if [ -n "${DOCKER_IMAGE:-}" ]; then
  xpk_cmd+=(--docker-image "$DOCKER_IMAGE" --command "$kd_jax_cmd")
else
  # xpk copies --script-dir into the image's working directory, where the pod installs
  # it; a clean copy keeps virtual environments and old runs out of the image.
  script_dir="$(mktemp -d -t kd_jax_xpk.XXXXXX)"
  trap 'rm -rf "$script_dir"' EXIT
  tar -cf - -C "$repo" --exclude=.venv --exclude=runs --exclude=.git . | tar -xf - -C "$script_dir"
  xpk_cmd+=(--base-docker-image "${BASE_IMAGE:-python:3.11}" --script-dir "$script_dir"
    --command "pip install -q -e . 'jax[tpu]' && $kd_jax_cmd")
fi
for key in PROJECT ZONE; do
  if [ -n "${!key:-}" ]; then
    xpk_cmd+=("--${key,,}" "${!key}")
  fi
done
read -r -a extra <<< "${XPK_ARGS:-}"
xpk_cmd+=("${extra[@]}")

echo "xpk.sh: workload $workload on $CLUSTER ($DEVICE_TYPE)" >&2
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${xpk_cmd[@]}"
  printf '\n'
  exit 0
fi
"${xpk_cmd[@]}"
