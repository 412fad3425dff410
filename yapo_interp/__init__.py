"""yapo_interp: learnable sparse activation steering (YaPO) and its baselines, on TransformerLens
and SAELens. See README.md; the method is section 2 of the YaPO paper."""

from yapo_interp.models import PRESETS, ModelLoadError, get_preset, load_model, load_sae
from yapo_interp.version import __version__

__all__ = ["PRESETS", "ModelLoadError", "get_preset", "load_model", "load_sae"]
