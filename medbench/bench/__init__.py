"""``medbench bench``: how fast evaluation and distillation run on this machine (issue 7).

Measures, on generated data (8 classes, 28 px RGB, so it runs anywhere without files):

* evaluation throughput (networks × epochs per second) of the K evaluation networks trained one
  at a time and batched (vmap, grouped) for K = 1, 5, 10 at IPC 1 and 10, and what ``auto``
  picks here;
* prediction throughput (images per second) of K = 5 networks, one by one and batched;
* DC (one outer step, one inner epoch, one iteration), DM and MTT iteration times (MTT's peak
  memory in a fresh subprocess: peak RSS is a process-lifetime high-water mark);
* images per second of expert-buffer training (MTT's experts);
* with ``--projection``: the wall-clock of the eight-dataset MedMNIST grid (random, DC, MTT ×
  IPC 1, 10, 50 × 5 eval networks, published split sizes) projected from those numbers.

Timings on a shared CPU are noisy: every mode is measured inside this one process, modes are
interleaved within each repeat, and the median of the repeats is reported, so compare ratios
within one report. Results go to ``reports/bench/<device>-<date>[-quick].md`` and ``.json``.
"""
