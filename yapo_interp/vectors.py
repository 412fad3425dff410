"""Finding and loading saved steering vectors, with the SAE each sparse one needs.

A vector is saved as ``PATH.safetensors`` + ``PATH.json`` (:class:`yapo_interp.steering.
SteeringVector`); a training run writes its final vector as ``RUN/vector`` and one checkpoint per
epoch as ``RUN/vectors/epoch_XX``. Here:

* :func:`resolve_vector_path` turns what a user typed (a vector with or without suffix, or a run
  folder) into a vector's base path;
* :func:`find_epoch_vectors` lists a run's epoch checkpoints (figure 5's stability view) and
  :func:`require_epoch_vectors` refuses a run without any;
* :func:`sae_spec` / :func:`sae_for_vector` say which SAE a sparse vector (YaPO, SAS, sae-dense)
  steers through, with one order of precedence for every command;
* :class:`VectorLoader` loads vectors and their SAEs, each SAE once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yapo_interp import models
from yapo_interp.errors import UserError
from yapo_interp.steering import SteeringVector, read_vector_sidecar

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

EPOCH_PATTERN = re.compile(r"epoch[_-]?(\d+)", re.IGNORECASE)


def find_epoch_vectors(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, vector path)`` for every checkpoint under ``RUN/vectors`` (or ``RUN``), sorted.

    A checkpoint is a ``.safetensors`` file with its ``.json``; its epoch is read from a path
    component like ``epoch_07`` (or from ``metadata["epoch"]`` when no component names one).
    """
    run_dir = Path(run_dir)
    root = run_dir / "vectors" if (run_dir / "vectors").is_dir() else run_dir
    found = []
    for tensor in sorted(root.rglob("*.safetensors")):
        if not tensor.with_suffix(".json").is_file():
            continue
        epoch = None
        for part in reversed(tensor.relative_to(root).with_suffix("").parts):
            match = EPOCH_PATTERN.search(part)
            if match:
                epoch = int(match.group(1))
                break
        if epoch is None:
            meta = read_vector_sidecar(tensor.with_suffix(".json"))  # one-line error if broken
            epoch = (meta.get("metadata") or {}).get("epoch")
        if epoch is not None:
            found.append((int(epoch), tensor.with_suffix("")))
    return sorted(found)


def require_epoch_vectors(run_dir: str | Path) -> list[tuple[int, Path]]:
    """:func:`find_epoch_vectors`, or a one-line ``UserError`` when the run has no checkpoint."""
    found = find_epoch_vectors(run_dir)
    if not found:
        raise UserError(f"{run_dir}: no epoch checkpoints (expected "
                        "RUN/vectors/epoch_XX.safetensors)")
    return found


def resolve_vector_path(path: str | Path) -> Path:
    """A vector's base path from a vector file (with or without suffix) or a run folder."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    if path.with_name(path.name + ".safetensors").is_file():
        return path
    if path.is_dir():
        if (path / "vector.safetensors").is_file():  # a training run's final vector
            return path / "vector"
        epochs = find_epoch_vectors(path)
        if epochs:
            return epochs[-1][1]
        direct = sorted(path.glob("*.safetensors"))
        if len(direct) == 1:
            return direct[0].with_suffix("")
        if direct:
            raise UserError(f"{path} holds several vectors ({', '.join(p.name for p in direct)}); "
                            "pass one of them")
        raise UserError(f"{path} holds no steering vector (no .safetensors files, no "
                        "vectors/epoch_XX folders)")
    raise UserError(f"no steering vector at {path}: expected {path}.safetensors and "
                    f"{path}.json, or a training run folder")


def sae_spec(vector: SteeringVector, *, sae_override: str | None = None,
             sae_id: str | None = None, preset: Any = None
             ) -> tuple[str, str | None, int | None]:
    """``(release, sae_id, layer)`` for :func:`yapo_interp.models.load_sae`: the SAE that
    ``vector`` steers through. Precedence: ``sae_override`` (a folder or SAELens release, with
    ``sae_id``; a command's ``--sae``), then the SAE folder named in the vector's metadata when it
    exists, then the release named there, then ``preset``'s SAE at the vector's layer; with none
    of these, a one-line ``UserError``."""
    described = (vector.metadata or {}).get("sae") or {}
    path = described.get("path")
    if sae_override:
        return sae_override, sae_id, vector.layer
    if path and Path(path).expanduser().is_dir():
        return str(Path(path).expanduser()), None, None
    if described.get("release"):
        return described["release"], described.get("id"), vector.layer
    if preset is None:
        raise UserError(f"the {vector.method} vector does not say which SAE it was trained "
                        "with; pass --sae")
    release, preset_id = preset.sae_for_layer(vector.layer)
    return release, preset_id, vector.layer


def load_sae_spec(spec: tuple[str, str | None, int | None], model: HookedTransformer, *,
                  device: str | None = None) -> SAE:
    """The SAE ``spec`` (from :func:`sae_spec`) names, loaded on ``device`` (default: the
    model's) and checked against ``model``."""
    release, sae_id, layer = spec
    # looked up on the module, so that tests can replace models.load_sae
    return models.load_sae(release, sae_id, layer=layer, model=model,
                           device=device or str(model.cfg.device))


def sae_for_vector(vector: SteeringVector, model: HookedTransformer, *,
                   sae_override: str | None = None, sae_id: str | None = None,
                   preset: Any = None, device: str | None = None) -> SAE:
    """The SAE that ``vector`` steers through (see :func:`sae_spec` for which one), loaded on
    ``device`` (default: the model's) and checked against ``model``."""
    return load_sae_spec(sae_spec(vector, sae_override=sae_override, sae_id=sae_id,
                                  preset=preset), model, device=device)


class VectorLoader:
    """Loads steering vectors and, for sparse ones, the SAE that :func:`sae_spec` names (the
    override, else the one in their metadata, else the preset's SAE for the vector's layer),
    each SAE once."""

    def __init__(self, model: HookedTransformer, *, sae_override: str | None = None,
                 sae_id: str | None = None, preset: Any = None):
        self.model = model
        self.sae_override = sae_override
        self.sae_id = sae_id
        self.preset = preset
        self._saes: dict[tuple, Any] = {}

    def _sae(self, vector: SteeringVector) -> SAE:
        key = sae_spec(vector, sae_override=self.sae_override, sae_id=self.sae_id,
                       preset=self.preset)
        if key not in self._saes:
            self._saes[key] = load_sae_spec(key, self.model)
        return self._saes[key]

    def load(self, path: str | Path) -> tuple[SteeringVector, SAE | None, str]:
        """``(vector, its SAE or None, its base path as text)`` for a vector file or run folder;
        a sparse vector is checked against the model and its SAE."""
        base = resolve_vector_path(path)
        vector = SteeringVector.load(base, model=self.model)
        sae = None
        if vector.uses_sae:
            sae = self._sae(vector)
            vector.check_fits(model=self.model, sae=sae, source=str(base))
        return vector, sae, str(base)
