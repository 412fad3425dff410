"""Activation steering: dense (BiPO, CAA) and sparse (YaPO, SAS) interventions, applied by hooks.

A steering vector changes the residual stream ``h = A_L(x)`` after block ``L``
(``blocks.L.hook_resid_post``) at *every* position, prompt and generated tokens alike.

**Dense steering** (BiPO, Cao et al. 2024; CAA) adds a vector ``v ∈ R^{d_model}`` — eq. 2::

    h' = h + d · λ · v

**Sparse steering** (YaPO; SAS, Bayat et al. 2025) adds ``v ∈ R^{d_sae}`` to the code of a sparse
autoencoder (SAE) and decodes — eq. 3::

    h' = Dec( ReLU( Enc(h) + d · λ · v ) )  +  ( h − Dec(Enc(h)) )
         └──────── steered reconstruction ──┘   └─ residual correction ─┘

The residual correction adds back what the SAE fails to reconstruct, so a zero vector leaves the
model exactly unchanged; the ReLU keeps the steered code non-negative, like the SAE's own codes.

**SAE-dense steering** (``sae-dense``, a control of issue 13, not in the paper) keeps YaPO's
parameterisation — ``c ∈ R^{d_sae}``, one coordinate per decoder row of the same SAE — but neither
encodes ``h`` nor applies the ReLU::

    h' = h + d · λ · (c @ W_dec)

It is dense steering along a vector written in the SAE's dictionary. Where ``Enc(h) + d·λ·v``
stays non-negative on every feature that ``v`` touches, YaPO's eq. 3 reduces to exactly this
(``Dec`` is affine), so if ``sae-dense`` trains as fast as YaPO, the speed comes from the
parameterisation (AdamW moving each of d_sae coordinates by ~lr), not from sparsity.
``Enc`` and ``Dec`` are SAELens's ``sae.encode`` / ``sae.decode``, so standard, JumpReLU and TopK
SAEs all work (``Enc`` already includes the SAE's own activation function). This is the same as
SAELens's ``HookedSAETransformer.add_sae(sae, use_error_term=True)`` with a hook on
``hook_sae_acts_post`` returning ``ReLU(acts + d·λ·v)`` (tested in ``tests/test_steering.py``).

``d ∈ {−1, +1}`` picks the direction (towards the preferred or the dispreferred behaviour) and ``λ``
the strength. Interventions are pure functions (``dense_intervention``, ``sparse_intervention``);
``steer(model, vectors, ...)`` applies one or several vectors as TransformerLens hooks inside a
``with`` block — every forward pass and ``model.generate()`` inside it is steered, and the hooks are
removed on exit, exceptions included::

    vector = SteeringVector.load("runs/train/vector", model=model, sae=sae)
    with steer(model, vector, multipliers=2.0, direction=+1, saes=sae):
        print(model.generate("The best dish for a family dinner is", max_new_tokens=30))

``SteeringVector`` is saved as ``PATH.safetensors`` (the tensor) plus ``PATH.json`` (method, layer,
model, SAE identity and fingerprint, training settings, dataset hash, epoch, and the tensor's shape
and SHA-256); the tensor file's header repeats method, layer and model, in sorted order so that the
same vector always gives the same bytes. ``load`` checks that the two files agree, the checksum
matches and every entry is finite (a damaged file is one line naming it and the fix), then that
the model, layer and SAE fit, saying what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from yapo_interp.errors import UserError
from yapo_interp.hooks import hook_name_for, sae_layer
from yapo_interp.io import atomic_path, write_json

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

sae_layer_of = sae_layer  # the name yapo_interp.train and yapo_interp.sweep import from here
DENSE_METHODS = ("bipo", "caa")
SPARSE_METHODS = ("yapo", "sas")
DECODER_METHODS = ("sae-dense",)  # c in R^{d_sae}, applied as h + d·λ·(c @ W_dec)
SAE_METHODS = SPARSE_METHODS + DECODER_METHODS  # vectors in SAE code space: need their SAE
METHODS = DENSE_METHODS + SPARSE_METHODS + DECODER_METHODS
VECTOR_FORMAT = 2  # 2: sidecar records the shape and SHA-256; tensor header the model


# --------------------------------------------------------------------------------------------
# The interventions (pure functions)
# --------------------------------------------------------------------------------------------


def dense_intervention(
    h: Float[torch.Tensor, "... d_model"],
    v: Float[torch.Tensor, "d_model"],
    strength: float | torch.Tensor = 1.0,
) -> Float[torch.Tensor, "... d_model"]:
    """Eq. 2: ``h + strength · v`` with ``strength = d · λ``."""
    return h + strength * v.to(h.dtype)


def sparse_intervention(
    h: Float[torch.Tensor, "... d_model"],
    v: Float[torch.Tensor, "d_sae"],
    sae: SAE,
    strength: float | torch.Tensor = 1.0,
) -> Float[torch.Tensor, "... d_model"]:
    """Eq. 3: ``Dec(ReLU(Enc(h) + strength · v)) + (h − Dec(Enc(h)))`` with ``strength = d · λ``.

    The SAE stays frozen; gradients flow to ``v`` (and to ``h``) only. The reconstruction error is
    computed under ``no_grad`` as in SAELens's ``SAE.forward`` with ``use_error_term``: it does not
    depend on ``v``.
    """
    codes = sae.encode(h)
    steered = sae.decode(torch.relu(codes + strength * v.to(codes.dtype)))
    with torch.no_grad():
        error = h - sae.decode(codes)
    return steered + error


def decoder_direction(c: Float[torch.Tensor, "d_sae"], sae: SAE) -> Float[torch.Tensor, "d_model"]:
    """``c @ W_dec``: the residual-stream vector that SAE code ``c`` writes (no ``b_dec``)."""
    return c.to(sae.W_dec.dtype) @ sae.W_dec


def decoder_intervention(
    h: Float[torch.Tensor, "... d_model"],
    c: Float[torch.Tensor, "d_sae"],
    sae: SAE,
    strength: float | torch.Tensor = 1.0,
) -> Float[torch.Tensor, "... d_model"]:
    """``sae-dense``: ``h + strength · (c @ W_dec)`` with ``strength = d · λ`` — YaPO's
    parameterisation without encoding ``h`` and without the ReLU."""
    return h + strength * decoder_direction(c, sae).to(h.dtype)


def intervention(
    h: Float[torch.Tensor, "... d_model"],
    v: torch.Tensor,
    strength: float | torch.Tensor = 1.0,
    sae: SAE | None = None,
    *,
    method: str | None = None,
) -> Float[torch.Tensor, "... d_model"]:
    """Steering of ``h`` by ``v``: dense (``sae is None``), ``sae-dense`` (``method="sae-dense"``,
    decoded through ``sae``) or sparse (any other method with an SAE)."""
    if sae is None:
        return dense_intervention(h, v, strength)
    if method in DECODER_METHODS:
        return decoder_intervention(h, v, sae, strength)
    return sparse_intervention(h, v, sae, strength)


# --------------------------------------------------------------------------------------------
# SAE identity: what a vector remembers about the SAE it lives in
# --------------------------------------------------------------------------------------------


def sae_fingerprint(sae: SAE) -> str:
    """A short hash of the SAE's architecture and weights (64 sampled features of every tensor
    with a d_sae axis, all of the others): equal SAEs, equal fingerprint; cheap at 65k width."""
    with torch.no_grad():
        d_sae = int(sae.cfg.d_sae)
        features = torch.linspace(0, d_sae - 1, steps=min(64, d_sae)).round().long()
        digest = hashlib.sha256(sae.cfg.architecture().encode())
        for name, tensor in sorted(sae.state_dict().items()):
            if tensor.ndim >= 1 and tensor.shape[0] == d_sae:
                tensor = tensor[features.to(tensor.device)]
            elif tensor.ndim == 2 and tensor.shape[1] == d_sae:
                tensor = tensor[:, features.to(tensor.device)]
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def sae_description(sae: SAE, *, release: str | None = None, sae_id: str | None = None,
                    path: str | Path | None = None) -> dict[str, Any]:
    """The SAE block of a vector's metadata: where it comes from and how to recognise it."""
    metadata = sae.cfg.metadata
    return {
        "release": release,
        "id": sae_id,
        "path": str(path) if path is not None else None,
        "architecture": sae.cfg.architecture(),
        "d_sae": int(sae.cfg.d_sae),
        "hook_name": metadata.hook_name if metadata else None,
        "fingerprint": sae_fingerprint(sae),
    }


# --------------------------------------------------------------------------------------------
# SteeringVector
# --------------------------------------------------------------------------------------------


def _base_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    return path


# What to do about a damaged or mismatched vector file, in every message that reports one.
REPAIR = "re-copy both files of the vector from where it was trained, or retrain it"


def tensor_sha256(tensor: Float[torch.Tensor, "d"]) -> str:
    """SHA-256 of a vector's float32 little-endian bytes: what the sidecar records and ``load``
    verifies (a flipped bit anywhere in the tensor data changes it)."""
    data = tensor.detach().float().cpu().contiguous().numpy().astype("<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def safetensors_bytes(tensor: Float[torch.Tensor, "d"], metadata: Mapping[str, str]) -> bytes:
    """A one-tensor (``"vector"``, float32) safetensors file with *sorted* header metadata.

    ``safetensors.torch.save_file`` writes its metadata in hash-map order, which changes from one
    process to the next; writing the (documented, simple) format here makes the bytes a function
    of the vector and the metadata alone. The result is read by ``safetensors.safe_open``.
    """
    data = tensor.detach().float().cpu().contiguous().numpy().astype("<f4").tobytes()
    header = {"__metadata__": {str(key): str(value) for key, value in sorted(metadata.items())},
              "vector": {"dtype": "F32", "shape": list(tensor.shape),
                         "data_offsets": [0, len(data)]}}
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes with spaces
    return len(encoded).to_bytes(8, "little") + encoded + data


def check_finite(tensor: torch.Tensor, what: str, *, fix: str = REPAIR) -> None:
    """Raise a one-line ``UserError`` when ``tensor`` has NaN or infinite entries."""
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise UserError(f"{what}: {bad} of {tensor.numel()} entries are NaN or infinite; {fix}.")


def read_vector_sidecar(json_path: Path) -> dict[str, Any]:
    """The ``.json`` sidecar of a vector, checked to be complete; else a one-line ``UserError``."""
    try:
        header = json.loads(json_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{json_path}: not a readable vector sidecar (not UTF-8 text); "
                        f"{REPAIR}.") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{json_path}: not a readable vector sidecar (broken JSON at line "
                        f"{error.lineno}: {error.msg}); {REPAIR}.") from None
    except OSError as error:
        raise UserError(f"{json_path}: cannot be read ({error.strerror or error}).") from None
    if not isinstance(header, dict):
        raise UserError(f"{json_path}: not a vector sidecar (a JSON {type(header).__name__}, "
                        f"not an object); {REPAIR}.")
    missing = [key for key in ("method", "layer") if key not in header]
    if missing:
        raise UserError(f"{json_path}: incomplete vector sidecar (no {' or '.join(missing)!s}); "
                        f"{REPAIR}.")
    if header["method"] not in METHODS:
        raise UserError(f"{json_path}: unknown method {header['method']!r} (expected one of "
                        f"{', '.join(METHODS)}); {REPAIR}.")
    layer = header["layer"]
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise UserError(f"{json_path}: 'layer' is {layer!r}, not a layer number; {REPAIR}.")
    if not isinstance(header.get("metadata", {}), dict):
        raise UserError(f"{json_path}: 'metadata' is not an object; {REPAIR}.")
    if int(header.get("format", 1)) > VECTOR_FORMAT:
        raise UserError(f"{json_path}: vector format {header['format']} is newer than this "
                        f"yapo_interp reads ({VECTOR_FORMAT}); upgrade yapo_interp.")
    return header


def read_vector_tensor(tensor_path: Path) -> tuple[Float[torch.Tensor, "d"], dict[str, str]]:
    """The ``vector`` tensor of a ``.safetensors`` file and its header metadata; a truncated,
    empty, damaged or foreign file raises a one-line ``UserError`` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(tensor_path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            names = list(handle.keys())
            vector = handle.get_tensor("vector") if "vector" in names else None
    except Exception as error:  # SafetensorError, OSError, ...: all mean "cannot be read"
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        size = tensor_path.stat().st_size if tensor_path.exists() else 0
        state = "empty" if size == 0 else "truncated or damaged"
        raise UserError(f"{tensor_path}: not a readable safetensors file ({state}: {reason}); "
                        f"{REPAIR}.") from None
    if vector is None:
        raise UserError(f"{tensor_path}: holds {', '.join(names) or 'no tensors'} but no "
                        "'vector': not a steering vector saved by yapo_interp; pass a vector's "
                        ".safetensors file.")
    if vector.ndim != 1:
        raise UserError(f"{tensor_path}: 'vector' has shape {tuple(vector.shape)}, not one "
                        f"axis; {REPAIR}.")
    return vector.float(), metadata


def check_vector_files(header: Mapping[str, Any], tensor_metadata: Mapping[str, str],
                       vector: Float[torch.Tensor, "d"], *, json_path: Path,
                       tensor_path: Path) -> None:
    """The sidecar and the tensor file of one vector agree (method, layer, model, shape, hook
    name), the tensor's checksum is the recorded one, and its entries are finite."""
    problems = []
    meta = header.get("metadata") or {}
    if tensor_metadata.get("method") not in (None, header["method"]):
        problems.append(f"the .json says method {header['method']}, the .safetensors header "
                        f"says {tensor_metadata['method']}")
    if tensor_metadata.get("layer") not in (None, str(header["layer"])):
        problems.append(f"the .json says layer {header['layer']}, the .safetensors header says "
                        f"{tensor_metadata['layer']}")
    if meta.get("hook_name") and meta["hook_name"] != hook_name_for(int(header["layer"])):
        problems.append(f"the .json says layer {header['layer']} but its hook_name is "
                        f"{meta['hook_name']}")
    tensor_model = tensor_metadata.get("model")
    if tensor_model and meta.get("model") and tensor_model != meta["model"]:
        problems.append(f"the .json says model {meta['model']}, the .safetensors header says "
                        f"{tensor_model}")
    if "shape" in header and list(header["shape"]) != list(vector.shape):
        problems.append(f"the .json says shape {list(header['shape'])}, the tensor has "
                        f"{list(vector.shape)}")
    if problems:
        raise UserError(f"{json_path} does not match {tensor_path.name}: " + "; ".join(problems)
                        + f" (edited, or the files of two vectors mixed); {REPAIR}.")
    expected = header.get("sha256")
    if expected is not None and expected != tensor_sha256(vector):
        raise UserError(f"{tensor_path}: checksum mismatch (the tensor's SHA-256 is not the one "
                        f"recorded in {json_path.name}): the file is damaged; {REPAIR}.")
    check_finite(vector, str(tensor_path),
                 fix="the file is damaged or training diverged; re-copy it or retrain the vector")


class MethodTraits:
    """What a ``method`` name implies, for any class with a ``method`` attribute (a vector, a
    training config)."""

    method: str

    @property
    def is_sparse(self) -> bool:
        """Applied through the SAE's encoder and ReLU (yapo, sas; eq. 3)."""
        return self.method in SPARSE_METHODS

    @property
    def uses_sae(self) -> bool:
        """Lives in SAE code space (``d_sae`` entries) and needs its SAE: yapo, sas, sae-dense."""
        return self.method in SAE_METHODS


@dataclass
class SteeringVector(MethodTraits):
    """A learned (BiPO, YaPO) or averaged (CAA, SAS) steering vector at one layer.

    ``vector`` has ``d_model`` entries for the dense methods (bipo, caa) and ``d_sae`` entries for
    the SAE-space ones (yapo, sas, sae-dense). ``metadata`` records the model, hook name, SAE (release, id, path,
    fingerprint), d_model, d_sae, training settings, dataset hash, epoch, country, setting and
    creation time.
    """

    method: str
    layer: int
    vector: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"Unknown steering method {self.method!r}; use one of "
                            f"{', '.join(METHODS)}.")
        if self.vector.ndim != 1:
            raise UserError(f"A steering vector must be 1-D, got shape {tuple(self.vector.shape)}.")

    @property
    def hook_name(self) -> str:
        """The hook the vector steers at: the residual stream after its layer."""
        return hook_name_for(self.layer)

    def __repr__(self) -> str:
        space = "d_sae" if self.uses_sae else "d_model"
        return (f"SteeringVector(method={self.method!r}, layer={self.layer}, "
                f"{space}={self.vector.numel()}, norm={self.vector.norm():.4g}, "
                f"epoch={self.metadata.get('epoch')})")

    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` and ``PATH.json`` atomically; return the safetensors path.

        The tensor file's bytes depend on the vector, method, layer and model only (its header
        metadata is written in sorted order), so the same vector always gives the same file. The
        ``.json`` sidecar records the tensor's shape and SHA-256, which ``load`` verifies. A
        vector with NaN or infinite entries is refused.
        """
        base = _base_path(path)
        tensor = self.vector.detach().float().cpu().contiguous()
        check_finite(tensor, f"the {self.method} vector to be saved at {base}",
                     fix="training diverged; retrain it, e.g. with a lower --lr")
        tensor_path = base.with_name(base.name + ".safetensors")
        with atomic_path(tensor_path) as temporary:
            temporary.write_bytes(safetensors_bytes(tensor, {
                "format": str(VECTOR_FORMAT), "layer": str(self.layer), "method": self.method,
                "model": str(self.metadata.get("model") or "")}))
        metadata = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    **self.metadata}
        write_json(base.with_name(base.name + ".json"),
                   {"format": VECTOR_FORMAT, "method": self.method, "layer": self.layer,
                    "shape": list(tensor.shape), "sha256": tensor_sha256(tensor),
                    "metadata": metadata})
        return tensor_path

    @classmethod
    def load(cls, path: str | Path, *, model: HookedTransformer | None = None,
             sae: SAE | None = None) -> SteeringVector:
        """Read a vector saved by ``save``; with ``model``/``sae``, check that it fits them.

        Both files are checked before anything is returned: the sidecar must be a complete JSON
        header and the tensor file a readable safetensors file holding one ``vector``; the two
        must agree on method, layer, model and shape (the sidecar cannot silently override the
        tensor file); the tensor's SHA-256 must match the one recorded at save time (vectors
        saved before checksums were recorded, format 1, are accepted without); every entry must
        be finite. Any problem raises a one-line ``UserError`` naming the file and the fix.
        """
        base = _base_path(path)
        json_path = base.with_name(base.name + ".json")
        tensor_path = base.with_name(base.name + ".safetensors")
        for needed in (json_path, tensor_path):
            if not needed.is_file():
                raise UserError(f"No steering vector at {base}: {needed} is missing (a vector is "
                                "a .safetensors file plus a .json file with the same name).")
        header = read_vector_sidecar(json_path)
        vector, tensor_metadata = read_vector_tensor(tensor_path)
        check_vector_files(header, tensor_metadata, vector, json_path=json_path,
                           tensor_path=tensor_path)
        loaded = cls(method=header["method"], layer=int(header["layer"]), vector=vector,
                     metadata=header.get("metadata") or {})
        if model is not None or sae is not None:
            loaded.check_fits(model=model, sae=sae, source=str(base))
        return loaded

    def mismatches(self, *, model: HookedTransformer | None = None,
                   sae: SAE | None = None) -> list[str]:
        """What differs between this vector's training setup and ``model`` / ``sae``."""
        problems = []
        meta = self.metadata
        if model is not None:
            trained_on = meta.get("model")
            if trained_on and trained_on != model.cfg.model_name:
                problems.append(f"model: trained on {trained_on!r}, given "
                                f"{model.cfg.model_name!r}")
            if meta.get("d_model") and meta["d_model"] != model.cfg.d_model:
                problems.append(f"d_model: vector's model has {meta['d_model']}, given model "
                                f"has {model.cfg.d_model}")
            if not 0 <= self.layer < model.cfg.n_layers:
                problems.append(f"layer: vector is for layer {self.layer}, the model has layers "
                                f"0..{model.cfg.n_layers - 1}")
            if not self.uses_sae and self.vector.numel() != model.cfg.d_model:
                problems.append(f"width: dense vector has {self.vector.numel()} entries, the "
                                f"model's d_model is {model.cfg.d_model}")
        if sae is not None and self.uses_sae:
            if self.vector.numel() != sae.cfg.d_sae:
                problems.append(f"d_sae: vector has {self.vector.numel()} entries, the SAE has "
                                f"d_sae={sae.cfg.d_sae}")
            layer = sae_layer(sae)
            if layer is not None and layer != self.layer:
                problems.append(f"layer: vector is for layer {self.layer}, the SAE reads layer "
                                f"{layer}")
            expected = (meta.get("sae") or {}).get("fingerprint")
            same_width = self.vector.numel() == sae.cfg.d_sae
            if expected and same_width and expected != sae_fingerprint(sae):
                described = meta.get("sae") or {}
                origin = described.get("path") or "/".join(
                    str(part) for part in (described.get("release"), described.get("id")) if part
                ) or "another SAE"
                problems.append(f"SAE weights: the vector was trained with {origin} "
                                f"(fingerprint {expected}), the given SAE differs "
                                f"(fingerprint {sae_fingerprint(sae)})")
            if model is not None and sae.cfg.d_in != model.cfg.d_model:
                problems.append(f"SAE d_in={sae.cfg.d_in} but the model's d_model is "
                                f"{model.cfg.d_model}")
        return problems

    def check_fits(self, *, model: HookedTransformer | None = None, sae: SAE | None = None,
                   source: str = "the steering vector") -> None:
        """A one-line ``UserError`` listing every way the vector does not fit ``model`` or ``sae``
        (see :meth:`mismatches`)."""
        problems = self.mismatches(model=model, sae=sae)
        if problems:
            raise UserError(f"{source} ({self.method}, layer {self.layer}) does not fit: "
                            + "; ".join(problems) + ".")


# --------------------------------------------------------------------------------------------
# Applying vectors: hooks and the `steer` context manager
# --------------------------------------------------------------------------------------------


def _as_list(value: Any, length: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * length
    values = [float(item) for item in value]
    if len(values) != length:
        raise UserError(f"Got {len(values)} {name} for {length} steering vectors; give one "
                        "number, or one per vector.")
    return values


def _sae_for(layer: int, saes: SAE | Mapping[int, SAE] | None, method: str) -> SAE:
    if saes is None:
        raise UserError(f"The {method} vector at layer {layer} lives in SAE space: pass the SAE "
                        "it was trained with, e.g. steer(model, vector, saes=sae).")
    if isinstance(saes, Mapping):
        if layer not in saes:
            raise UserError(f"No SAE given for layer {layer} (saes has layers "
                            f"{sorted(saes)}); add saes[{layer}].")
        return saes[layer]
    return saes


def steering_hooks(
    model: HookedTransformer,
    vectors: SteeringVector | Sequence[SteeringVector],
    *,
    multipliers: float | Sequence[float] = 1.0,
    direction: int = 1,
    saes: SAE | Mapping[int, SAE] | None = None,
) -> list[tuple[str, Any]]:
    """The ``(hook_name, fn)`` pairs that apply ``vectors``; one hook per layer.

    Vectors at the same layer are combined before they are applied: the sparse ones are summed in
    code space (``Dec(ReLU(Enc(h) + Σ d·λ_i·v_i)) + error``), then the dense ones are added
    (``+ Σ d·λ_i·v_i``; a ``sae-dense`` vector ``c`` counts as the dense ``c @ W_dec``).
    """
    if isinstance(vectors, SteeringVector):
        vectors = [vectors]
    vectors = list(vectors)
    if direction not in (-1, 1):
        raise UserError(f"direction must be +1 or -1, got {direction!r}.")
    strengths = _as_list(multipliers, len(vectors), "multipliers")
    dense: dict[int, torch.Tensor] = {}
    sparse: dict[int, torch.Tensor] = {}
    layer_saes: dict[int, SAE] = {}
    for vector, strength in zip(vectors, strengths):
        problems = vector.mismatches(model=model)
        sae = None
        if vector.uses_sae:
            sae = _sae_for(vector.layer, saes, vector.method)
            problems += vector.mismatches(sae=sae)
        if vector.is_sparse and layer_saes.setdefault(vector.layer, sae) is not sae:
            problems.append("two different SAEs for the same layer")
        if problems:
            raise UserError(f"Cannot apply {vector!r}: " + "; ".join(problems) + ".")
        bucket = sparse if vector.is_sparse else dense
        values = vector.vector.detach().float()
        if vector.method in DECODER_METHODS:
            with torch.no_grad():
                values = decoder_direction(values.to(sae.W_dec.device), sae).float().cpu()
        delta = direction * strength * values
        bucket[vector.layer] = bucket[vector.layer] + delta if vector.layer in bucket else delta

    hooks = []
    for layer in sorted(set(dense) | set(sparse)):
        def hook(h, hook, layer=layer):  # noqa: ARG001 - TransformerLens hook signature
            if layer in sparse:
                h = sparse_intervention(h, sparse[layer].to(h.device), layer_saes[layer])
            if layer in dense:
                h = dense_intervention(h, dense[layer].to(h.device))
            return h
        hooks.append((hook_name_for(layer), hook))
    return hooks


@contextmanager
def steer(
    model: HookedTransformer,
    vectors: SteeringVector | Sequence[SteeringVector],
    *,
    multipliers: float | Sequence[float] = 1.0,
    direction: int = 1,
    saes: SAE | Mapping[int, SAE] | None = None,
) -> Iterator[HookedTransformer]:
    """Inside the block, every forward pass and ``model.generate()`` of ``model`` is steered.

    dense ``h' = h + d·λ·v`` (eq. 2); sparse ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``
    (eq. 3), at ``blocks.{layer}.hook_resid_post``, all positions. ``multipliers`` is λ (one number
    or one per vector), ``direction`` is d (+1 or −1), ``saes`` the SAE of the sparse vectors (one
    SAE, or a mapping layer → SAE). The hooks are removed on exit, also after an exception.
    """
    hooks = steering_hooks(model, vectors, multipliers=multipliers, direction=direction, saes=saes)
    with model.hooks(fwd_hooks=hooks):
        yield model


def vector_from_tensor(
    method: str,
    layer: int,
    vector: torch.Tensor,
    model: HookedTransformer,
    *,
    sae: SAE | None = None,
    sae_info: Mapping[str, Any] | None = None,
    **metadata: Any,
) -> SteeringVector:
    """Wrap a tensor as a ``SteeringVector`` with the model/SAE part of the metadata filled in
    (the SAE is recorded for the SAE-space methods only: yapo, sas, sae-dense)."""
    sparse = sae is not None and method in SAE_METHODS
    base = {
        "model": model.cfg.model_name,
        "hook_name": hook_name_for(layer),
        "d_model": int(model.cfg.d_model),
        "d_sae": int(sae.cfg.d_sae) if sparse else None,
        "sae": ({**sae_description(sae), **{k: v for k, v in (sae_info or {}).items()
                                             if v is not None}} if sparse else None),
    }
    return SteeringVector(method=method, layer=layer, vector=vector.detach().float().cpu().clone(),
                          metadata={**base, **metadata})
