#!/usr/bin/env bash
# The GPU check, one command (README, "GPU check"):
#   bash scripts/gpu_check.sh --out "$OUT"          # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --smoke --out /tmp/g  # anywhere: every stage on the CPU, toy sizes
# The GPU machine's image has torch, torchvision, accelerate and timm but not pydantic (plabel's
# config) or datasets (the data stage): their wheels travel in .whl/ (made here, where PyPI is
# reachable, by scripts/fetch_gpu_wheels.sh) and are installed into /tmp when an import fails.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=0
for module in pydantic datasets; do python3 -c "import $module" 2>/dev/null || missing=1; done
if ((missing)) && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/plabel-site .whl/*.whl
    export PYTHONPATH=/tmp/plabel-site${PYTHONPATH:+:$PYTHONPATH}
fi
# plabel from this checkout (it need not be installed there)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1
exec python3 -m plabel.bench.gpu_check "$@"
