source .device_data/setup.sh; timeout 170 python3 -m medbench bench --device cuda --only eval --epochs 50 --out $OUT 2>&1 | tee $OUT/eval.log
