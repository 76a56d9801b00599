#!/usr/bin/env bash
# Trains medjax on a Cloud TPU pod slice: creates the slice (directly, or as a queued resource
# that waits for capacity), copies this checkout to every host, installs medjax with TPU jax,
# runs medjax-train on all hosts at once (one process per host, found by JAX on the TPU VM),
# and deletes the slice.
#
#   bash launch/tpu_pod.sh --dry_run --name medjax-l --zone us-east5-a --type v5p-128 \
#       -- --config medmllm_l --workdir gs://BUCKET/runs/medmllm_l \
#          --config.data.dir=gs://BUCKET/medjax_data
#
# --dry_run prints the exact commands instead of running them. Steps can be run alone with
# --only create|copy|install|train|delete (e.g. re-run `--only train` after a preemption: the
# run resumes from its newest checkpoint in the workdir). Everything after `--` goes to
# medjax-train. Needs gcloud, logged in, with a project set (or --project).
set -euo pipefail

NAME="" ZONE="" TYPE="" PROJECT="" VERSION="" QUEUED=0 SPOT=0 DRY=0 ONLY=""
usage() { sed -n '2,16p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=1; shift ;;
    --dry_run) DRY=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "tpu_pod.sh: unknown argument $1" >&2; usage ;;
  esac
done
TRAIN_ARGS=("$@")
[ -n "$NAME" ] && [ -n "$ZONE" ] && [ -n "$TYPE" ] || { echo "need --name, --zone, --type" >&2; usage; }
[ ${#TRAIN_ARGS[@]} -gt 0 ] || { echo "give medjax-train's arguments after --" >&2; usage; }
if [ -z "$VERSION" ]; then  # the TPU VM software of each generation
  case "$TYPE" in
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-*) VERSION=v2-alpha-tpuv5-lite ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v4-*) VERSION=tpu-ubuntu2204-base ;;
    *) echo "tpu_pod.sh: no default --version for $TYPE; give one" >&2; exit 2 ;;
  esac
fi
PROJECT_FLAG=()
[ -n "$PROJECT" ] && PROJECT_FLAG=(--project="$PROJECT")
SPOT_FLAG=()
[ "$SPOT" = 1 ] && SPOT_FLAG=(--spot)

show() {  # the command as one copy-pasteable line: arguments with spaces or quotes quoted
  local out=() a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:,@+%~-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
run() {  # prints the command; runs it unless --dry_run
  show "$@"
  [ "$DRY" = 1 ] || "$@"
}
step() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
ssh_all() { run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
              --worker=all --command="$1"; }

if step create; then
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources create "$NAME-qr" --node-id="$NAME" --zone="$ZONE" \
      --accelerator-type="$TYPE" --runtime-version="$VERSION" "${PROJECT_FLAG[@]}" "${SPOT_FLAG[@]}"
    echo "# then, until capacity is granted (state ACTIVE), every minute:"
    run gcloud compute tpus queued-resources describe "$NAME-qr" --zone="$ZONE" \
      "${PROJECT_FLAG[@]}" --format='value(state.state)'
    if [ "$DRY" = 0 ]; then
      until gcloud compute tpus queued-resources describe "$NAME-qr" --zone="$ZONE" \
          "${PROJECT_FLAG[@]}" --format='value(state.state)' | grep -q ACTIVE; do sleep 60; done
    fi
  else
    run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
      --version="$VERSION" "${PROJECT_FLAG[@]}" "${SPOT_FLAG[@]}"
  fi
fi
if step copy; then
  # The checkout without its venv, runs and caches (git archive: what is committed).
  run git archive --format=tar.gz -o /tmp/medjax.tar.gz HEAD
  run gcloud compute tpus tpu-vm scp /tmp/medjax.tar.gz "$NAME":~/ --zone="$ZONE" \
    "${PROJECT_FLAG[@]}" --worker=all
fi
if step install; then
  ssh_all "mkdir -p ~/medjax && tar -xzf ~/medjax.tar.gz -C ~/medjax && cd ~/medjax && \
python3 -m venv ~/venv && ~/venv/bin/pip install -q -e . 'jax[tpu]==0.10.2' gcsfs \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi
if step train; then
  # Every host runs the same command; JAX finds the slice's hosts (--multiprocess). A
  # preemption (SIGTERM to any host) saves on all of them and exits 0: re-run this step.
  ssh_all "cd ~/medjax && ~/venv/bin/medjax-train --multiprocess $(printf '%q ' "${TRAIN_ARGS[@]}")"
fi
if step delete; then
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources delete "$NAME-qr" --zone="$ZONE" \
      "${PROJECT_FLAG[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --quiet
  fi
fi
