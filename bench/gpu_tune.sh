#!/usr/bin/env bash
# Validation sweep of Adam's lr and the L2 weight for LEGCF at batch 16,384 on the
# GPU machine: one `legcf run` per pair, five at a time. Each line of
# OUT_DIR/tune.jsonl holds the pair, the best validation NDCG@20 of pretrain and
# refine, and the test figures of the model the run kept.
# Usage there: bash bench/gpu_tune.sh DATA_DIR OUT_DIR [WAVE ...]
# where a WAVE is "lr:l2:seed[:--option=value,...] ..." run at once (default: the
# 3 x 3 grid, seed 2024); the optional fourth field passes more `legcf run` options.
set -uo pipefail
data=$1; out=$2; shift 2
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD" OMP_NUM_THREADS=3
one() {  # lr l2 seed [options, comma-separated]
    local extra=${4:-} dir=/tmp/tune-lr$1-l2$2-s$3${4:+-${4//[^a-z0-9.]/}}
    rm -rf "$dir"
    timeout 220 python3 -m legcf_cli run "$dir" --data "$data" --device cuda --lr "$1" --l2 "$2" --seed "$3" \
        ${extra//,/ } --json \
        > "$dir.json" 2> /dev/null
    python3 - "$dir" "$1" "$2" "$3" "$extra" <<'EOF' >> "$out/tune.jsonl"
import json, sys
run, lr, l2, seed, extra = sys.argv[1:]
try:
    test = json.load(open(f"{run}.json"))
    stages = json.load(open(f"{run}/manifest.json"))["stages"]
    row = {"lr": float(lr), "l2": float(l2), "seed": int(seed), "options": extra,
           "valid_pretrain": stages["pretrain"]["metrics"]["ndcg@20"],
           "valid_refine": stages["refine"]["metrics"]["ndcg@20"],
           "epochs": [len(stages[s]["history"]) for s in ("pretrain", "refine")],
           "seconds": round(stages["pretrain"]["seconds"] + stages["refine"]["seconds"], 1),
           "kept": test["kept"], "test_ndcg@20": test["ndcg@20"], "test_recall@20": test["recall@20"]}
except (OSError, KeyError, ValueError) as error:
    row = {"lr": float(lr), "l2": float(l2), "seed": int(seed), "failed": repr(error)}
print(json.dumps(row))
EOF
}
(($#)) || set -- "0.05:3e-4:2024 0.02:3e-4:2024 0.1:3e-4:2024 0.05:1e-4:2024 0.05:1e-3:2024" \
    "0.02:1e-4:2024 0.1:1e-4:2024 0.02:1e-3:2024 0.1:1e-3:2024"
for wave in "$@"; do
    for triple in $wave; do one ${triple//:/ } & done
    wait
    cat "$out/tune.jsonl"; echo
done
