source .device_data/setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, kornia, medmnist, medbench; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), kornia.__version__)"
echo "== smoke"
timeout 150 python3 -m medbench run --methods random,dc,mtt --datasets breastmnist --data-root .device_data/medmnist --ipc 1 --eval-models 5 --method-args dc:iterations=50,eval_every=25 --method-args mtt:iterations=50,eval_every=25,num_experts=4,buffer_epochs=6,max_start_epoch=4,lr_img=100,lr_lr=1e-7 --device cuda --db $OUT/smoke.sqlite --no-progress 2>&1 | tee $OUT/smoke.log
echo "== bench"
timeout 360 python3 -m medbench bench --device cuda --projection --epochs 50 --out $OUT 2>&1 | tee $OUT/bench.log
