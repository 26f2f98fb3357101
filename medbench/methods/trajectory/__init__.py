"""Trajectory matching: the machinery shared by the methods that match expert training trajectories
(MTT, DATM).

* :mod:`.buffer` — the expert buffer: experts trained on the real data, their parameters saved after
  every epoch, cached and reused across IPCs, seeds, runs and methods (``medbench experts``).
* :mod:`.unroll` — one student unroll from an expert epoch and the exact gradient of the matching
  loss w.r.t. the synthetic images and the learned step size, in memory independent of the unroll
  length.
* :mod:`.distill` — the distillation loop: expert and start-epoch draws, image / lr / label updates,
  val-scored checkpoints, resumable state.
* :mod:`.teacher` — the buffer as a method's settings, and the experts as a soft-label teacher.
"""

from medbench.core.seeds import derived_seed
from medbench.methods.trajectory.buffer import (
    ExpertBuffer,
    ExpertConfig,
    FlatParams,
    build_buffer,
    build_seeded,
    make_augment,
    resolve_root,
)
from medbench.methods.trajectory.distill import Diverged, Matching, match_trajectories, set_labels
from medbench.methods.trajectory.teacher import (
    BufferParams,
    check_buffer_params,
    open_buffer,
    prepare_buffer,
    teacher_logits,
)
from medbench.methods.trajectory.unroll import (
    IMPLEMENTATIONS,
    Match,
    Step,
    match_recompute,
    match_unrolled,
    plan_unroll,
)

__all__ = ["IMPLEMENTATIONS", "BufferParams", "Diverged", "ExpertBuffer", "ExpertConfig", "FlatParams", "Match",
           "Matching", "Step", "build_buffer", "build_seeded", "check_buffer_params", "derived_seed", "make_augment",
           "match_recompute", "match_trajectories", "match_unrolled", "open_buffer", "plan_unroll", "prepare_buffer",
           "resolve_root", "set_labels", "teacher_logits"]
