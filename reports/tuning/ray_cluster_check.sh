#!/bin/bash
# Issue 16 acceptance 2: the same tuning on a local Ray cluster (started as a user would) and in-process.
set -e
mkdir -p "${OUT:-/tmp/raycheck}"
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
ARGS="--methods dm --datasets breastmnist --ipc 1 --method-args dm:iterations=10,eval_every=5,eval_epochs=20,batch_real=32 --width 16 --data-root ../shared/data/medmnist --device cpu --trials 4 --rescore 2 --rescore-seeds 1"
rm -f ${OUT:-/tmp/raycheck}/cluster.sqlite ${OUT:-/tmp/raycheck}/local.sqlite
ray start --head --num-cpus 1 --disable-usage-stats
s=$(date +%s); medbench tune $ARGS --db ${OUT:-/tmp/raycheck}/cluster.sqlite --ray-address auto; echo "cluster seconds: $(( $(date +%s) - s ))"
ray stop
s=$(date +%s); medbench tune $ARGS --db ${OUT:-/tmp/raycheck}/local.sqlite; echo "local seconds: $(( $(date +%s) - s ))"
python reports/tuning/compare_tuning.py ${OUT:-/tmp/raycheck}/cluster.sqlite ${OUT:-/tmp/raycheck}/local.sqlite
