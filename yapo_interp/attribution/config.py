"""The settings of an attribution: the analysis (``AttributionConfig``) and a whole run with its
data selection (``AttributionRunConfig``, what the command line reads)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from yapo_interp.argv import flag, switch
from yapo_interp.errors import UserError
from yapo_interp.models import get_preset

ENCODE_METHODS = ("signed_nnls", "nnls", "cosine", "encoder", "encoder_offset")
DEFAULT_METHOD = "signed_nnls"
ATTRIBUTIONS = ("effect", "static")  # what a code is: the change a vector makes, or its encoding
R2_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
NEURONPEDIA_URL = "https://www.neuronpedia.org/{neuronpedia_id}/{feature}"


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of one attribution run (saved with every result)."""

    attribution: str = "effect"  # "effect" on real activations, or "static" encodings
    method: str = DEFAULT_METHOD  # static: how the dense vector becomes a code (module docstring)
    strength: float = 1.0  # effect: λ of eq. 2 / 3
    directions: tuple[int, ...] = (1, -1)  # effect: d of eq. 2 / 3; the first one is tabulated
    k: int = 20  # top-k features listed per vector
    n_tokens: int = 10  # promoted / suppressed tokens per feature (logit lens)
    n_examples: int = 5  # top-activating dataset examples per feature
    max_prompts: int = 400  # dataset prompts run for examples / mean activation (evenly spaced)
    max_tokens: int = 256  # prompts are cut to this many tokens
    batch_size: int = 8
    skip_bos: bool = True  # the BOS position is excluded from top activations and the mean
    nnls_tol: float = 1e-5  # NNLS stops when no feature correlates with the residual above this
    max_features: int | None = None  # NNLS stops after this many features (None: fit fully)
    feature_pages: bool = True  # an offline HTML page per listed feature (feature_pages.py)


@dataclass(frozen=True)
class AttributionRunConfig:
    """Everything ``python -m yapo_interp.attribution`` reads: the two vectors, the prompts, the
    model and the analysis settings (``analysis``, saved as ``config`` in ``attribution.json``).

    ``run_attribution(model, config, out)`` does with it what the command does; ``seed`` is
    recorded (the analysis draws no random numbers; the command seeds before loading the model).
    """

    bipo: Path  # dense vector (bipo or caa): PATH of PATH.safetensors + PATH.json
    yapo: Path  # sparse vector (yapo or sas)
    analysis: AttributionConfig = field(default_factory=AttributionConfig)
    prompts_from: str = "cultural"  # 'cultural' (shipped set), a file, or 'none'
    preset: str = "embedded"  # its SAE is used when the YaPO vector names none that exists
    model: str | None = None  # overrides the preset's model
    device: str = "cpu"
    seed: int = 0
    image_formats: tuple[str, ...] = ("png",)  # besides HTML, when kaleido can render

    @property
    def model_name(self) -> str:
        """The model the run is for: ``model`` if given, else the preset's."""
        return self.model or get_preset(self.preset).model

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AttributionRunConfig:
        """The run the parsed command line asks for (``cli.build_parser``); a ``UserError`` for a
        ``--k`` below 1 or a ``--strength`` that is not a positive number."""
        if args.k < 1:
            raise UserError(f"--k must be at least 1 (got {args.k}).")
        if not (math.isfinite(args.strength) and args.strength > 0):
            raise UserError(f"--strength must be a positive number (got {args.strength}).")
        analysis = AttributionConfig(attribution=args.attribution, method=args.method,
                                     strength=args.strength, k=args.k, n_examples=args.examples,
                                     max_prompts=args.max_prompts, batch_size=args.batch_size,
                                     max_features=args.max_features,
                                     feature_pages=not args.no_feature_pages)
        return cls(bipo=args.bipo, yapo=args.yapo, analysis=analysis,
                   prompts_from=args.prompts_from, preset=args.preset, model=args.model,
                   device=args.device, seed=args.seed,
                   image_formats=() if args.no_images else ("png",))

    def to_argv(self) -> list[str]:
        """The arguments (without ``--out``) that give this run back through ``from_args``; a
        ``UserError`` naming the settings that no flag sets (analysis settings other than their
        defaults, image formats other than PNG or none)."""
        analysis = self.analysis
        unset = [name for name in ("directions", "n_tokens", "max_tokens", "skip_bos", "nnls_tol")
                 if getattr(analysis, name) != getattr(AttributionConfig, name)]
        if self.image_formats not in ((), ("png",)):
            unset.append("image_formats")
        if unset:
            raise UserError(f"no command line gives {', '.join(unset)} other than the default")
        return ["--bipo", str(self.bipo), "--yapo", str(self.yapo),
                "--attribution", analysis.attribution, "--method", analysis.method,
                "--strength", str(analysis.strength), "--k", str(analysis.k),
                "--prompts-from", self.prompts_from, "--max-prompts", str(analysis.max_prompts),
                "--examples", str(analysis.n_examples),
                *flag("--max-features", analysis.max_features),
                "--batch-size", str(analysis.batch_size),
                *switch("--no-feature-pages", not analysis.feature_pages),
                *switch("--no-images", not self.image_formats), "--preset", self.preset,
                *flag("--model", self.model), "--device", self.device, "--seed", str(self.seed)]
