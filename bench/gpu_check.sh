#!/usr/bin/env bash
# One prepared GPU check (the device tool's machine): the CUDA path of every
# stage on Gowalla plus the hot-path benchmark on CUDA and on the CPU.
# Usage there: bash bench/gpu_check.sh DATA_DIR OUT_DIR [extra `legcf run` options]
set -uo pipefail
data=$1; out=$2; shift 2
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, pymetis, typer, rich, safetensors, scipy; print('torch', torch.__version__, torch.cuda.is_available())"
python3 bench/hotpaths.py "$data" --device cuda --json | tee "$out/bench_cuda.json"
run=/tmp/legcf-gpu-run
rm -rf "$run"
/usr/bin/time -v python3 -m legcf_cli run "$run" --data "$data" --device cuda --json "$@" \
    > "$out/run_cuda.json" 2> "$out/run_cuda.stderr"
echo "run exit $?"
cat "$out/run_cuda.json"
cp "$run/manifest.json" "$out/manifest_cuda.json"
python3 -m legcf_cli inspect "$run" --json > "$out/inspect_cuda.json"
grep -E "Maximum resident|Elapsed" "$out/run_cuda.stderr"
