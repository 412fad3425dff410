"""The model a worker runs on: :class:`ModelSetup` says how to get it (a preset, or a factory
function for tests), and each worker process loads it once and keeps it for the trials it runs
(:data:`_LOADED`, keyed by the setup's values)."""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.steering import sae_layer_of


@dataclass(frozen=True)
class ModelSetup:
    """How a worker gets its model and SAE: the preset (and ``--model``/``--layer``), or
    ``factory``, ``"module:function"`` returning ``(model, sae, sae_info)`` for a layer (or
    ``None``) — e.g. ``yapo_interp.testing:tiny_sweep_setup`` for tests. Loaded once per worker
    process and kept."""

    preset: str = "embedded"
    model: str | None = None
    layer: int | None = None
    device: str = "cpu"
    factory: str | None = None

    def load(self) -> tuple[Any, Any, dict[str, Any] | None, int]:
        """``(model, sae, sae_info, layer)``, from this process's cache after the first call
        (keyed by the settings' values, so a copy of this setup unpickled for the next task
        finds it)."""
        key = tuple(sorted(asdict(self).items()))
        if key not in _LOADED:
            _LOADED.clear()  # one model per worker process
            _LOADED[key] = self._load()
        return _LOADED[key]

    def _load(self) -> tuple[Any, Any, dict[str, Any] | None, int]:
        if self.factory:
            module, _, name = self.factory.partition(":")
            build = getattr(importlib.import_module(module), name)
            model, sae, sae_info = build(self.layer)
            layer = self.layer if self.layer is not None else sae_layer_of(sae)
            return model, sae, sae_info, int(layer)
        preset = models.get_preset(self.preset)
        layer = self.layer if self.layer is not None else preset.layer
        model = models.load_model(self.model or preset.model, device=self.device)
        release, sae_id = preset.sae_for_layer(layer)
        sae = models.load_sae(release, sae_id, layer=layer, model=model, device=self.device)
        path = models.SHIPPED_SAE_DIR / f"layer_{layer}" if release == "embedded" else None
        return model, sae, {"release": release, "id": sae_id,
                            "path": str(path) if path else None}, layer


_LOADED: dict[tuple, tuple[Any, Any, dict[str, Any] | None, int]] = {}
