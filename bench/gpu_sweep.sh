#!/usr/bin/env bash
# Anchor-weight sweep (Figure 4c analogue) and a refine with m=5, on the GPU machine.
# Usage there: bash bench/gpu_sweep.sh DATA_DIR OUT_DIR
set -uo pipefail
data=$1; out=$2
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD" PYTHONWARNINGS=ignore
legcf() { python3 -m legcf_cli "$@"; }
base=/tmp/sweep
rm -rf $base && mkdir -p $base
legcf prepare $base/w0.5 --data "$data" > /dev/null 2>&1
for w in 0.7 0.9 0.6 0.8; do
    cp -r $base/w0.5 $base/w$w
done
for w in 0.5 0.7 0.9 0.6 0.8; do
    d=$base/w$w
    legcf partition $d --anchor-weight $w > /dev/null 2>&1
    legcf pretrain $d --device cuda > /dev/null 2>$d/pretrain.log
    echo "{\"anchor_weight\": $w, \"stage\": \"pretrain\", \"test\": $(legcf evaluate $d --json --model pretrain --device cuda 2>/dev/null)}" >> $out/sweep.jsonl
    cp $d/manifest.json $out/manifest_w$w.json
    if [ "$w" = "0.5" ]; then
        legcf refine $d --update-every 5 --device cuda > /dev/null 2>$d/refine.log
        echo "{\"anchor_weight\": $w, \"stage\": \"refine-m5\", \"test\": $(legcf evaluate $d --json --model refine --device cuda 2>/dev/null)}" >> $out/sweep.jsonl
        cp $d/manifest.json $out/manifest_w$w.json
    fi
    tail -1 $out/sweep.jsonl
done
