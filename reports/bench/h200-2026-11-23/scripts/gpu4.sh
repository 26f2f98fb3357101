source .device_data/setup.sh
D=.device_data/medmnist
COVID=.device_data/covid/covid19_radiography_3class.npz
echo "== options accuracy"
timeout 150 python3 reports/bench/options_accuracy.py --data-root $D --dataset bloodmnist --ipc 10 --models 10 --device cuda 2>&1 | tee $OUT/options_accuracy.log
echo "== random cells, full protocol, real data"
timeout 150 python3 -m medbench run --methods random --datasets bloodmnist,pneumoniamnist,breastmnist,$COVID --data-root $D --ipc 1,10,50 --device cuda --db /tmp/cells.sqlite --no-progress 2>&1 | tee $OUT/cells_random.log
echo "== DC reference settings, BloodMNIST IPC 1"
timeout 120 python3 -m medbench run --methods dc --datasets bloodmnist --data-root $D --ipc 1 --device cuda --db /tmp/cells.sqlite --no-progress 2>&1 | tee $OUT/cells_dc.log
echo "== MTT reduced buffer/iterations, BloodMNIST IPC 1,10"
timeout 150 python3 -m medbench run --methods mtt --datasets bloodmnist --data-root $D --ipc 1,10 --method-args mtt:num_experts=4,buffer_epochs=25,iterations=200,eval_every=100,lr_img=100 --device cuda --db /tmp/cells.sqlite --no-progress 2>&1 | tee $OUT/cells_mtt.log
python3 -m medbench results --db /tmp/cells.sqlite --format csv > $OUT/cells.csv 2>&1; cp /tmp/cells.sqlite $OUT/
