source .device_data/setup.sh; timeout 90 python3 .device_data/dc_real.py 2>&1 | tee $OUT/dc_real.log
