#!/usr/bin/env bash
# Every prepared GPU check of benchmarks/, in one command, for a GPU machine without network.
# Usage (from the repository root): bash benchmarks/gpu_all.sh [--quick] OUT_DIR [CHECK ...]
# CHECK is any of: throughput speedups rectifid tf_ti2i table sdxl freegraftor. The default
# (throughput speedups rectifid tf_ti2i table) is issue 30's device check: batched throughput up to
# batch 32, every speed-up key and the GPU preset, RectifID and TF-TI2I, then the time-to-Table-1
# record from the new records; its limits add up to under 540 s with the wheels' install (see LIMITS).
# sdxl and freegraftor have their own records and fit a second call.
# --quick: the same checks on the CPU with the tiny twins (seconds each; the tests run it), no wheels,
# no nvidia-smi: a dry run of this script's wiring.
# Packages the machine lacks travel as wheels in .whl/ (diffusers, hydra-core, omegaconf, antlr4,
# open_clip_torch, ftfy, wcwidth, importlib_metadata, this project's own wheel): installed into
# /tmp/site with --no-deps, so the machine's torch stays. Each check has its own time limit, so one
# slow check cannot starve the others; the records land in OUT_DIR and are packed in records.tar.
set -uo pipefail
quick=()
if [[ ${1:-} == --quick ]]; then quick=(--quick); shift; fi
out=${1:?usage: gpu_all.sh [--quick] OUT_DIR [CHECK ...]}
shift
checks=${*:-throughput speedups rectifid tf_ti2i table}
py=${PYTHON:-python3}  # the interpreter (the tests pass their own)

# The batched RectifID / TF-TI2I measurements (issue 30.2): items per guided call 1 and 4, few timed
# iterations/steps so each fits its limit below; the full sweeps (1,2,4,8, scripts' defaults) take a call of
# their own: python3 benchmarks/gpu_rectifid.py --out OUT and python3 benchmarks/gpu_tf_ti2i.py --batches 1,2,4,8
rectifid_args=(--iterations 4 --batches 1,4 --batch-iterations 2 --budget-s 30)
tf_ti2i_args=(--pairs 1 --batches 1,4 --batch-steps 2 --budget-s 70)  # one (TF-TI2I, plain) pair: about 33 s at 1024 px

mkdir -p "$out/records"
if [[ ${#quick[@]} -eq 0 ]]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MONKEY_CACHE=${MONKEY_CACHE:-/tmp/monkey-cache}
"$py" -c "import torch, diffusers, monkey; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"

run() {  # run LIMIT_S NAME CMD...: one check, its log in OUT_DIR/records, never longer than LIMIT_S
    local limit=$1 name=$2; shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/records/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
# the records the checks update a section of, and those time_to_table1 reads where a check is not run
for record in gpu_throughput gpu_rectifid gpu_tf_ti2i; do
    cp "results/benchmarks/$record.json" "$out/records/" 2>/dev/null
done
# LIMITS (seconds; each script's own budget sits inside its limit). --quick gives the speed-up keys a
# budget below the compile reserve, so no inductor build runs on a CPU
speedups_budget=200
[[ ${#quick[@]} -gt 0 ]] && speedups_budget=60
for check in $checks; do
    case $check in
        throughput) run 90 gpu_throughput "$py" benchmarks/gpu_throughput.py "${quick[@]}" --budget-s 75 \
            --rounds 2 --batch-sizes 8 16 32 --out "$out/records" ;;
        speedups) run 220 gpu_speedups "$py" benchmarks/gpu_throughput.py "${quick[@]}" --speedups \
            --budget-s "$speedups_budget" --speedup-pairs 2 --larger-batch 32 --no-plain-larger --out "$out/records" ;;
        rectifid) run 45 gpu_rectifid "$py" benchmarks/gpu_rectifid.py "${quick[@]}" "${rectifid_args[@]}" \
            --out "$out/records" ;;
        tf_ti2i) run 90 gpu_tf_ti2i "$py" benchmarks/gpu_tf_ti2i.py "${quick[@]}" "${tf_ti2i_args[@]}" \
            --out "$out/records" ;;
        table) run 25 time_to_table1 "$py" benchmarks/time_to_table1.py --records "$out/records" --out "$out/records" ;;
        sdxl) run 160 gpu_sdxl "$py" benchmarks/gpu_sdxl.py "${quick[@]}" --budget-s 125 --out "$out/records" ;;
        freegraftor) run 60 gpu_freegraftor "$py" benchmarks/gpu_freegraftor.py --out "$out/records" ;;
        *) echo "unknown check '$check' (allowed: throughput speedups rectifid tf_ti2i table sdxl freegraftor)"; exit 2 ;;
    esac
done
tar -C "$out" -cf "$out/records.tar" records && rm -rf "$out/records"
