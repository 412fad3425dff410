"""Cultural MCQ data (appendix D of the paper), behaviour CSVs, and preference pairs."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PreferencePair:
    """One training example of the bi-directional preference objective (eq. 1 and 4):
    the prompt ``x``, the preferred response ``y_w`` (chosen) and the dispreferred ``y_l``."""

    prompt: str
    chosen: str
    rejected: str
