#!/usr/bin/env bash
# Every prepared GPU check of benchmarks/, in one command, for a GPU machine without network.
# Usage (from the repository root): bash benchmarks/gpu_all.sh OUT_DIR [CHECK ...]
# CHECK is any of: throughput speedups sdxl rectifid tf_ti2i freegraftor. The default (speedups sdxl)
# is what an open issue or a missing GPU record still needs, sized to stay under one command's 600 s
# limit with the wheels' install (speedups 380 s, sdxl 160 s); throughput, rectifid and tf_ti2i have
# records from the 2026-11-27 H100 run, and freegraftor fits a second call if device time is left.
# Packages the machine lacks travel as wheels in .whl/ (diffusers, hydra-core, omegaconf, antlr4,
# open_clip_torch, ftfy, wcwidth, importlib_metadata, this project's own wheel): installed into
# /tmp/site with --no-deps, so the machine's torch stays. Each script has its own time limit, so one
# slow check cannot starve the others; the records land in OUT_DIR and are packed in records.tar.
set -uo pipefail
out=${1:?usage: gpu_all.sh OUT_DIR [CHECK ...]}
shift
checks=${*:-speedups sdxl}
mkdir -p "$out/records"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MONKEY_CACHE=/tmp/monkey-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, monkey; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"

run() {  # run LIMIT_S NAME CMD...: one check, its log in OUT_DIR/records, never longer than LIMIT_S
    local limit=$1 name=$2; shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/records/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
cp results/benchmarks/gpu_throughput.json "$out/records/" 2>/dev/null  # its CPU section is kept, the GPU one replaced
for check in $checks; do
    case $check in
        throughput) run 270 gpu_throughput python3 benchmarks/gpu_throughput.py --budget-s 240 --out "$out/records" ;;
        speedups) run 380 gpu_speedups python3 benchmarks/gpu_throughput.py --speedups --budget-s 340 --out "$out/records" ;;
        sdxl) run 160 gpu_sdxl python3 benchmarks/gpu_sdxl.py --budget-s 125 --out "$out/records" ;;
        rectifid) run 90 gpu_rectifid python3 benchmarks/gpu_rectifid.py --out "$out/records" ;;
        tf_ti2i) run 120 gpu_tf_ti2i python3 benchmarks/gpu_tf_ti2i.py --out "$out/records" ;;
        freegraftor) run 60 gpu_freegraftor python3 benchmarks/gpu_freegraftor.py --out "$out/records" ;;
        *) echo "unknown check '$check' (allowed: throughput speedups sdxl rectifid tf_ti2i freegraftor)"; exit 2 ;;
    esac
done
tar -C "$out" -cf "$out/records.tar" records && rm -rf "$out/records"
