source .device_data/setup.sh
D=.device_data/medmnist
echo "== options (after the bf16 fix)"
timeout 240 python3 -m medbench bench --device cuda --only options --ks 10 --epochs 50 --out $OUT 2>&1 | tee $OUT/options.log
echo "== options accuracy (after the bf16 fix)"
timeout 120 python3 reports/bench/options_accuracy.py --data-root $D --dataset bloodmnist --ipc 10 --models 10 --device cuda 2>&1 | tee $OUT/options_accuracy.log
echo "== MTT reduced buffer/iterations, BloodMNIST IPC 1,10"
timeout 200 python3 -m medbench run --methods mtt --datasets bloodmnist --data-root $D --ipc 1,10 --method-args mtt:num_experts=4,buffer_epochs=25,iterations=100,eval_every=50,lr_img=100 --device cuda --db /tmp/mtt.sqlite 2>&1 | tr '\r' '\n' | grep -v "^\s*$" | tail -40 | tee $OUT/cells_mtt.log
cp /tmp/mtt.sqlite $OUT/ 2>/dev/null
