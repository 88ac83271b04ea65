#!/usr/bin/env bash
# Retrains the two sample models from tinyshakespeare (public domain; not shipped here).
# Each run uses one thread, so both train side by side on a 2-core machine: about an hour.
# Usage: bash sample_models/make_samples.sh [path/to/tinyshakespeare.txt]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/tinyshakespeare.txt}
shape=(--set n_layer=4 --set n_head=4 --set n_embd=128 --steps 5000 --seed 1337)

OMP_NUM_THREADS=1 gpt-tui train --data "$data" --arch nanogpt "${shape[@]}" \
  --set block_size=128 --set bias=true --out sample_models/shakespeare-nanogpt &
OMP_NUM_THREADS=1 gpt-tui train --data "$data" --arch nanochat "${shape[@]}" \
  --set sequence_len=128 --set n_kv_head=4 --out sample_models/shakespeare-nanochat &
wait
# The optimizer state is only for resuming; the shipped samples leave it out.
rm -f sample_models/shakespeare-*/optim_*.pt
