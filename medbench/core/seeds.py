"""One table of seed streams: every random draw medbench makes is derived from a cell's seed and
one of these numbers, so no two uses of randomness ever share a stream. The numbers are the ones
the code has always used (changing one changes every result drawn from it).

``generator_for(seed, stream, ...)`` gives an independent CPU generator for a method's draws;
``derived_seed(seed, tag, ...)`` an integer seed for a network's initialisation or a buffer.
"""

from __future__ import annotations

import numpy as np
import torch

# generator_for(cell seed, STREAM, index...): the streams of the methods' draws.
INIT = 0  # the initial synthetic images (noise), :mod:`medbench.methods.synthetic`
ITERATION = 1  # everything one distillation iteration draws (real batches, networks, augmentation)
SELECTION = 2  # the network that scores a candidate set on val
CANDIDATES = 3  # random's further candidate subsets (candidates=N)
EMBED = 4  # the coresets' embedding network
TILES = 5  # the further tiles of a tiled subset (IDM's initial set, random_tiled)
QUEUE = 6  # IDM's queue of networks: creation, choice, training batches

# derived_seed(..., TAG): integer seeds of networks and draws outside those streams.
EVAL_MODELS = 0x5EED  # the K evaluation networks of a cell (with the cell seed)
EVAL_TRAINING = 0xD20  # an evaluation network's training draws (with its own seed)
EXPERT = 0xE4  # an expert of the trajectory buffer (with the buffer seed and its index)
CHECKPOINT_SCORING = 0x7A1  # the network scoring a trajectory checkpoint (with the cell seed and iteration)
STUDENT = 0x57  # the student network of trajectory matching (with the cell seed)
DATM_ORDER = 0xDA7  # the order in which DATM replaces misclassified initial images (with the cell seed)


def generator_for(seed: int, *stream: int) -> torch.Generator:
    """An independent CPU generator for ``(seed, *stream)``."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def derived_seed(*parts: int) -> int:
    """One 32-bit seed from integers (each taken modulo 2³²)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])
