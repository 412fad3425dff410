"""Seeding every random number generator a run uses (a leaf: library code imports it here, not from
the command-line helpers of ``yapo_interp.cli``, which re-exports it)."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
