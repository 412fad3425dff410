"""What an attribution run reads before and beside the model: the two saved vectors (checked to be
a dense and a sparse vector at one layer), the dataset prompts, and the SAE the YaPO vector
steers through (``_sae_for``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yapo_interp import models
from yapo_interp.attribution.config import AttributionRunConfig
from yapo_interp.attribution.prompts import load_prompts
from yapo_interp.errors import UserError
from yapo_interp.steering import SteeringVector
from yapo_interp.vectors import load_sae_spec, sae_spec

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class AttributionInputs:
    """The loaded vectors and prompts of a run (``load_inputs``); no model is needed for them."""

    bipo: SteeringVector  # dense (bipo or caa)
    yapo: SteeringVector  # sparse (yapo or sas), at the same layer
    prompts: list[str]

    @property
    def layer(self) -> int:
        """The layer both vectors steer."""
        return self.yapo.layer


def _load_vector(path: str | Path) -> SteeringVector:
    """The vector saved at ``path`` (``PATH`` of ``PATH.safetensors`` + ``PATH.json``)."""
    return SteeringVector.load(path)


def load_inputs(config: AttributionRunConfig) -> AttributionInputs:
    """Load ``config``'s vectors and prompts; a one-line ``UserError`` for a damaged file, a
    sparse ``bipo`` or dense ``yapo`` vector, or vectors at different layers (all before any
    model is loaded)."""
    bipo, yapo = _load_vector(config.bipo), _load_vector(config.yapo)
    if bipo.is_sparse:
        raise UserError(f"--bipo {config.bipo} is a sparse {bipo.method} vector; give a dense "
                        "(bipo or caa) vector.")
    if not yapo.is_sparse:
        raise UserError(f"--yapo {config.yapo} is a dense {yapo.method} vector; give a sparse "
                        "(yapo or sas) vector.")
    if bipo.layer != yapo.layer:
        raise UserError(f"The vectors steer different layers (BiPO {bipo.layer}, YaPO "
                        f"{yapo.layer}); their features can only be compared at one layer.")
    prompts = load_prompts(config.prompts_from, config.analysis.max_prompts)
    return AttributionInputs(bipo=bipo, yapo=yapo, prompts=prompts)


def _sae_for(yapo: SteeringVector, preset: models.Preset, model: HookedTransformer,
             device: str) -> tuple[SAE, str]:
    """The SAE the YaPO vector steers through (``vectors.sae_spec``: the folder named in its
    metadata, else the release named there, else the preset's SAE at its layer), and its name."""
    path = ((yapo.metadata or {}).get("sae") or {}).get("path")
    spec = sae_spec(yapo, preset=preset)
    if path and spec[0] != str(Path(path).expanduser()):
        print(f"note: the SAE folder {path} named in the YaPO vector is missing; using "
              f"{spec[0]}", file=sys.stderr)
    release, sae_id, layer = spec
    name = release if layer is None else (f"{release}/{sae_id}" if sae_id
                                          else f"{release} layer {layer}")
    return load_sae_spec(spec, model, device=device), name
