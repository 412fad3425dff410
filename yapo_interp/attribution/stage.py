"""The attribution stage: ``run_attribution(model, config, out)`` does what
``python -m yapo_interp.attribution`` does once the model is loaded (check that the vectors fit the
model and their SAE, attribute, print the overlap, write the folder), so a notebook or the study
calls it with a config instead of building a command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yapo_interp import models
from yapo_interp.attribution.analysis import AttributionReport, attribute
from yapo_interp.attribution.config import AttributionRunConfig
from yapo_interp.attribution.inputs import AttributionInputs, _sae_for, load_inputs
from yapo_interp.attribution.save import write_report
from yapo_interp.attribution.tables import format_overlap
from yapo_interp.errors import UserError

if TYPE_CHECKING:  # slow imports, needed only for type hints
    from transformer_lens import HookedTransformer


@dataclass
class AttributionResult:
    """What one run found and wrote."""

    report: AttributionReport
    settings: dict[str, Any]  # recorded as ``settings`` in attribution.json
    files: list[Path]
    sae_name: str


def run_attribution(model: HookedTransformer, config: AttributionRunConfig, out: str | Path, *,
                    inputs: AttributionInputs | None = None) -> AttributionResult:
    """Attribute ``config``'s BiPO and YaPO vectors to the features of the YaPO vector's SAE on
    ``model``, print the overlap and write tables, figures and ``attribution.json`` into ``out``.

    ``inputs`` are the vectors and prompts when already loaded (``load_inputs(config)``, which
    the command calls before loading the model); a vector that does not fit the model or the SAE
    (width, layer, SAE fingerprint) is refused with the reason.
    """
    inputs = inputs if inputs is not None else load_inputs(config)
    bipo, yapo, prompts = inputs.bipo, inputs.yapo, inputs.prompts
    analysis = config.analysis
    models.check_layer(model, yapo.layer)
    if bipo.vector.shape[-1] != model.cfg.d_model:
        raise UserError(f"--bipo {config.bipo} has d_model={bipo.vector.shape[-1]}, but "
                        f"{model.cfg.model_name} has d_model={model.cfg.d_model}: it was trained "
                        "on another model.")
    sae, sae_name = _sae_for(yapo, models.get_preset(config.preset), model, config.device)
    if yapo.vector.shape[-1] != sae.cfg.d_sae:
        raise UserError(f"--yapo {config.yapo} has d_sae={yapo.vector.shape[-1]}, but the SAE "
                        f"{sae_name} has d_sae={sae.cfg.d_sae}: the vector was trained with "
                        "another SAE.")
    bipo.check_fits(model=model, source=f"--bipo {config.bipo}")
    yapo.check_fits(model=model, sae=sae, source=f"--yapo {config.yapo}")
    print(f"model {model.cfg.model_name}, layer {yapo.layer}, SAE {sae_name} "
          f"(d_sae {sae.cfg.d_sae}), {len(prompts)} prompts, attribution {analysis.attribution}"
          + (f" (method {analysis.method})" if analysis.attribution == "static" else ""))
    report = attribute(model, sae, yapo.layer, bipo.vector.detach().float(),
                       yapo.vector.detach().float(), prompts, analysis)
    print(format_overlap(report))
    settings = {"config": asdict(analysis), "bipo": str(config.bipo), "yapo": str(config.yapo),
                "bipo_metadata": bipo.metadata, "yapo_metadata": yapo.metadata,
                "model": model.cfg.model_name, "layer": yapo.layer, "sae": sae_name,
                "prompts_from": config.prompts_from, "n_prompts": len(prompts),
                "preset": config.preset, "seed": config.seed}
    written = write_report(report, out, settings, image_formats=config.image_formats)
    print("wrote " + ", ".join(str(path) for path in written))
    return AttributionResult(report=report, settings=settings, files=written, sae_name=sae_name)
