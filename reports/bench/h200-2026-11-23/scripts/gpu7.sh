source .device_data/setup.sh; timeout 150 python3 .device_data/pool_bench.py 2>&1 | tee $OUT/pool.log
