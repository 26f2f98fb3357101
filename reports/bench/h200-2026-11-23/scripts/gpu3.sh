source .device_data/setup.sh
echo "== options"
timeout 400 python3 -m medbench bench --device cuda --only options --ks 10 --epochs 50 --out $OUT 2>&1 | tee $OUT/options.log
echo "== equivalence on real BloodMNIST IPC 10 (random subset seed 0, 10 eval networks, full protocol)"
for mode in sequential grouped vmap; do
  timeout 60 python3 -m medbench run --methods random --datasets bloodmnist --data-root .device_data/medmnist --ipc 10 --eval-models 10 --eval-batching $mode --device cuda --db /tmp/eq_$mode.sqlite --no-progress --format csv 2>&1 | tee -a $OUT/equivalence.log
done
