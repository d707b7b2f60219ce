#!/usr/bin/env bash
# One prepared GPU check (the device tool's machine), sized for a 15-minute lease:
#   1. tests/test_cuda.py: every embedding layer and backbone trains on CUDA as on the CPU;
#   2. `legcf run` on Gowalla with --device cuda at the defaults, timed;
#   3. the hot-path benchmark on CUDA;
#   4. the explicit-propagation layers (NGCF with LEGCF and with the full table) on
#      Gowalla on CUDA, a few epochs each, for their epoch time.
# Usage there: bash bench/gpu_check.sh DATA_DIR OUT_DIR [extra `legcf run` options]
set -uo pipefail
data=$1; out=$2; shift 2
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, pymetis, typer, rich, safetensors, scipy; print('torch', torch.__version__, torch.cuda.is_available())"

echo "== 1. CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_cuda.py 2>&1 | tail -20 | tee "$out/pytest_cuda.txt"

echo "== 2. legcf run on CUDA"
run=/tmp/legcf-gpu-run
rm -rf "$run"
timeout 240 /usr/bin/time -v python3 -m legcf_cli run "$run" --data "$data" --device cuda --json "$@" \
    > "$out/run_cuda.json" 2> "$out/run_cuda.stderr"
echo "run exit $?"
cat "$out/run_cuda.json"
cp "$run/manifest.json" "$out/manifest_cuda.json"
grep -E "Maximum resident|Elapsed" "$out/run_cuda.stderr"

echo "== 3. hot paths on CUDA"
timeout 90 python3 bench/hotpaths.py "$data" --device cuda --json | tee "$out/bench_cuda.json"

echo "== 4. explicit propagation on Gowalla (CUDA)"
for layer in "legcf ngcf" "full ngcf"; do
    set -- $layer
    dir=/tmp/legcf-gpu-$1-$2
    rm -rf "$dir" && cp -r "$run" "$dir"
    timeout 60 python3 -m legcf_cli pretrain "$dir" --embedding "$1" --backbone "$2" --epochs 3 \
        --device cuda > /dev/null 2>&1
    if [ "$1" = legcf ]; then
        timeout 40 python3 -m legcf_cli refine "$dir" --epochs 2 --device cuda > /dev/null 2>&1
    fi
    stages=pretrain; [ "$1" = legcf ] && stages="pretrain refine"
    python3 - "$dir" "$1-$2" $stages <<'EOF' | tee -a "$out/explicit_cuda.jsonl"
import json, sys
stages = json.load(open(f"{sys.argv[1]}/manifest.json"))["stages"]
print(json.dumps({"layer": sys.argv[2], **{
    name: {"backbone": stages[name]["config"].get("backbone"), "seconds": stages[name]["seconds"], "epochs": len(stages[name]["history"]),
           "ndcg@20": stages[name]["metrics"].get("ndcg@20")}
    for name in sys.argv[3:]}}))
EOF
done
