import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

import medbench.nn.batched as B
from medbench.bench.measure import Settings, _condensed, _spec
from medbench.evaluation.protocol import model_seeds, train_models

s, dev = Settings(), torch.device("cuda")


class Instance(nn.Module):
    def __init__(self, gn):
        super().__init__()
        self.weight, self.bias, self.eps = gn.weight, gn.bias, gn.eps

    def forward(self, x):
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


orig_init = B.GroupedConvNet.__init__
def patched(self, models, options=B.DEFAULT_OPTIONS):
    orig_init(self, models, options)
    if PATCH:
        for i, m in enumerate(self.features):
            if isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels:
                self.features[i] = Instance(m)
        self._features = self.features
B.GroupedConvNet.__init__ = patched
PATCH = False

for ipc in (1, 10):
    images, labels = _condensed(s, ipc, dev)
    def run(mode, epochs):
        return train_models(images, labels, model_seeds(0, 10), spec=_spec(s), channels=3, num_classes=8, size=28,
                            epochs=epochs, lr=0.01, batching=mode)
    def t(mode):
        run(mode, 1); torch.cuda.synchronize(); st = time.perf_counter(); run(mode, 50); torch.cuda.synchronize()
        return 500 / (time.perf_counter() - st)
    for rep in range(2):
        PATCH = False; seq = t("sequential"); g = t("grouped")
        PATCH = True; gi = t("grouped")
        print(f"ipc {ipc} rep {rep}: sequential {seq:.0f}, grouped {g:.0f} ({g/seq:.2f}x), grouped+instance_norm {gi:.0f} ({gi/seq:.2f}x) net-epochs/s", flush=True)
    PATCH = False
    a = run("grouped", 2).predict_proba(images)
    PATCH = True
    b = run("grouped", 2).predict_proba(images)
    print("max prob diff GroupNorm vs instance_norm:", (a - b).abs().max().item())
    if ipc == 10:
        for patch in (False, True):
            PATCH = patch
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run("grouped", 10); torch.cuda.synchronize()
            print(f"--- profile grouped ipc 10, instance_norm={patch}")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
