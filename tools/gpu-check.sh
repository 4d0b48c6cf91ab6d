#!/usr/bin/env bash
# `make gpu-check`: the device check of one GPU in at most ~8 minutes (issue #25).
#   Phase 1 (side by side, each under its own time limit): the CUDA smoke runs of every
#   benchmark (--quick --device cuda) and a 3-minute backbones run.
#   Phase 2 (alone, so that its times are not shared with other processes): the speed table,
#   python -m benchmarks speed --only training --device cuda.
# Uses the machine's own python3 and installs nothing: the dependencies the GPU image lacks
# come on PYTHONPATH, the prebuilt datasets in RDFM_CACHE_DIR, the data in RDFM_DATA_DIR
# (../shared/gpu/README.md). Everything goes under GPU_OUT (default runs/gpu-check), packed
# into GPU_OUT/gpu-check.tgz at the end; the exit code is 0 even when a part failed or timed
# out (each part's status is in GPU_OUT/status.txt), so what did run always comes back.
set -uo pipefail
PY=${PY:-python3}
OUT=${GPU_OUT:-runs/gpu-check}
mkdir -p "$OUT/logs"
: > "$OUT/status.txt"
start=$(date +%s)

part() {  # part NAME LIMIT_SECONDS ARGS...: one benchmark process under `timeout`, logged
  local name=$1 limit=$2; shift 2
  ( timeout --kill-after=10 "$limit" "$PY" -m benchmarks "$@" > "$OUT/logs/$name.log" 2>&1
    echo "$name: exit $? after $(( $(date +%s) - start )) s (limit $limit s)" >> "$OUT/status.txt" ) &
}

"$PY" - > "$OUT/logs/device.log" 2>&1 <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**30, "GiB")
PY

# Phase 1: ~4 minutes
part earth 200 earth --quick --device cuda --out "$OUT/earth" --restart
part so3 200 so3 --quick --device cuda --out "$OUT/so3" --restart
part proteins 200 proteins --quick --device cuda --out "$OUT/proteins" --restart
part codesign 220 codesign --quick --device cuda --out "$OUT/codesign" --restart
part text 200 text --quick --device cuda --out "$OUT/text" --restart
part backbones 240 backbones --device cuda --minutes 3 --out "$OUT/backbones" --restart
wait
# Phase 2: ~3.5 minutes, alone
part speed 210 speed --only training --device cuda --json "$OUT/speed.json"
wait
echo "total: $(( $(date +%s) - start )) s" >> "$OUT/status.txt"
cat "$OUT/status.txt"
tail -n 12 "$OUT/logs/speed.log"
tar -czf "$OUT/../gpu-check.tgz" -C "$(dirname "$OUT")" "$(basename "$OUT")" && mv "$OUT/../gpu-check.tgz" "$OUT/"
exit 0
