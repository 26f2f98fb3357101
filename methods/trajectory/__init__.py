"""Trajectory matching: the machinery shared by the methods that match expert training trajectories
(MTT; DATM and later ones build on it).

* :mod:`.buffer` — the expert buffer: experts trained on the real data, their parameters saved after
  every epoch, cached and reused across IPCs, seeds, runs and methods (``medbench experts``).
* :mod:`.unroll` — one student unroll from an expert epoch and the exact gradient of the matching
  loss w.r.t. the synthetic images and the learned step size, in memory independent of the unroll
  length.
"""

from medbench.methods.trajectory.buffer import (
    ExpertBuffer,
    ExpertConfig,
    FlatParams,
    build_buffer,
    build_seeded,
    derived_seed,
    make_augment,
    resolve_root,
)
from medbench.methods.trajectory.unroll import (
    IMPLEMENTATIONS,
    Match,
    Step,
    match_recompute,
    match_unrolled,
    plan_unroll,
)

__all__ = ["IMPLEMENTATIONS", "ExpertBuffer", "ExpertConfig", "FlatParams", "Match", "Step", "build_buffer",
           "build_seeded", "derived_seed", "make_augment", "match_recompute", "match_unrolled", "plan_unroll",
           "resolve_root"]
