"""grouped trainer with nn.AvgPool2d (before) and MeanPool2x2 (after), K = 10, width 128, 50 epochs."""
import time

import torch

import medbench.nn.batched as B
from medbench.bench.measure import Settings, _condensed, _spec
from medbench.evaluation.protocol import model_seeds, train_models

s, dev = Settings(), torch.device("cuda")
fast = B.MeanPool2x2.replaces
for ipc in (1, 10):
    images, labels = _condensed(s, ipc, dev)
    def run(mode, epochs):
        return train_models(images, labels, model_seeds(0, 10), spec=_spec(s), channels=3, num_classes=8, size=28,
                            epochs=epochs, lr=0.01, batching=mode)
    def t(mode):
        run(mode, 1); torch.cuda.synchronize(); st = time.perf_counter(); run(mode, 50); torch.cuda.synchronize()
        return 500 / (time.perf_counter() - st)
    for rep in range(3):
        seq = t("sequential")
        B.MeanPool2x2.replaces = staticmethod(lambda p: False); before = t("grouped")
        B.MeanPool2x2.replaces = fast; after = t("grouped")
        print(f"ipc {ipc} rep {rep}: sequential {seq:.0f}, grouped AvgPool2d {before:.0f} ({before/seq:.2f}x), "
              f"grouped MeanPool2x2 {after:.0f} ({after/seq:.2f}x) net-epochs/s", flush=True)
    a = run("sequential", 20).predict_proba(images); b = run("grouped", 20).predict_proba(images)
    print(f"ipc {ipc}: max |p_sequential - p_grouped| after 20 epochs: {(a - b).abs().max().item():.2e}")
