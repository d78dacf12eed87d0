#!/usr/bin/env bash
# The device tool's one command (docs/performance.md, "GPU check"): versions, then the check under a
# hard time limit, in a work folder outside $OUT (the JPEG pool and run folders stay there); only
# the results and logs are copied to $OUT, also when the limit stops the check.
set -uo pipefail
budget=${1:-360}
shift || true
stages=("$@")  # default: every stage
work=/tmp/gpu-check
mkdir -p "$work" "$OUT"
{ nvidia-smi -L; nproc; python3 -c "import importlib.metadata as m; print({p: m.version(p) for p in ('torch','torchvision','accelerate','timm','pyarrow','fsspec','typing_extensions','numpy','pillow')})"; } 2>&1 | tee "$OUT/env.txt"
timeout --signal=INT --kill-after=15 $((budget + 40)) bash scripts/gpu_check.sh --budget-s "$budget" --quickstart-timeout 150 --out "$work" ${stages[@]:+--stages "${stages[@]}"} 2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
cp "$work"/results.json "$work"/results.md "$work"/quickstart.log "$work"/launch.log "$OUT"/ 2>/dev/null
echo "gpu_check exit status $status"
exit "$status"
