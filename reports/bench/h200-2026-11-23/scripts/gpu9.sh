source .device_data/setup.sh; timeout 100 python3 .device_data/profile_ipc1.py 2>&1 | tee $OUT/profile1.log
