"""DC outer step with per-class real gradients in a loop vs one vmapped call (H200, width 128)."""
import functools
import statistics
import time

import torch

import medbench.methods.dc as dc
from medbench.bench.measure import Settings, _splits, _task
from medbench.methods import synthetic as syn

orig = dc.real_gradients
s, dev = Settings(), torch.device("cuda")
splits = _splits(s, s.classes * s.batch_real, dev)
for ipc in (1, 10, 50):
    task = _task(splits, s, ipc)
    images = syn.initial_set(task, "real")[0].requires_grad_(True)
    opt = torch.optim.SGD([images], lr=0.1, momentum=0.5)
    net = syn.fresh_model(task, torch.Generator().manual_seed(0))
    def outer(stacked):
        dc.real_gradients = functools.partial(orig, stacked=stacked)
        loss = dc.gradient_loss(net, task, images, torch.Generator().manual_seed(1), batch_real=s.batch_real,
                                distance=dc.DISTANCES["ours"], augment=None)
        opt.zero_grad(); loss.backward(); opt.step()
    times = {False: [], True: []}
    for mode in (False, True):
        outer(mode)
    for _ in range(15):
        for mode in (False, True):
            torch.cuda.synchronize(); t = time.perf_counter(); outer(mode); torch.cuda.synchronize()
            times[mode].append(time.perf_counter() - t)
    a, b = statistics.median(times[False]), statistics.median(times[True])
    print(f"ipc {ipc}: outer step loop {a*1000:.1f} ms, stacked {b*1000:.1f} ms ({a/b:.2f}x)", flush=True)
