import torch
from torch.profiler import ProfilerActivity, profile

from medbench.bench.measure import Settings, _condensed, _spec
from medbench.evaluation.protocol import model_seeds, train_models

s, dev = Settings(), torch.device("cuda")
images, labels = _condensed(s, 1, dev)
def run(mode, epochs):
    return train_models(images, labels, model_seeds(0, 10), spec=_spec(s), channels=3, num_classes=8, size=28,
                        epochs=epochs, lr=0.01, batching=mode)
for mode in ("grouped", "sequential"):
    run(mode, 2); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run(mode, 20); torch.cuda.synchronize()
    print(f"--- {mode} ipc 1 K 10, 20 epochs")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=70))
