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
    """The SAE named in the YaPO vector's metadata, else the preset's SAE at the vector's layer.

    (To be replaced by the one SAE lookup of ``yapo_interp.vectors``, which ``evaluate`` uses too.)
    """
    info = (yapo.metadata or {}).get("sae") or {}
    path = info.get("path")
    if path and Path(path).expanduser().is_dir():
        return models.load_sae(str(path), model=model, device=device), f"{path}"
    release, sae_id = info.get("release"), info.get("id")
    if release:
        return (models.load_sae(release, sae_id, layer=yapo.layer, model=model, device=device),
                f"{release}/{sae_id}" if sae_id else f"{release} layer {yapo.layer}")
    if path:
        print(f"note: the SAE folder {path} named in the YaPO vector is missing; using the "
              f"{preset.name} preset's SAE for layer {yapo.layer}", file=sys.stderr)
    release, sae_id = preset.sae_for_layer(yapo.layer)
    return (models.load_sae(release, sae_id, layer=yapo.layer, model=model, device=device),
            f"{release}/{sae_id}" if sae_id else f"{release} layer {yapo.layer}")
