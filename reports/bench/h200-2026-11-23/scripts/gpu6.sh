source .device_data/setup.sh
timeout 220 python3 .device_data/profile_grouped.py 2>&1 | tee $OUT/profile.log
