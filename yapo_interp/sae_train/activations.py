"""Token windows of the corpus and the activation cache: the residual stream after every requested
layer, from one forward pass per batch, on disk (bfloat16 memory maps), resumable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from yapo_interp.corpus import Document
from yapo_interp.errors import UserError
from yapo_interp.hooks import hook_name_for
from yapo_interp.io import read_json, write_json

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


# --------------------------------------------------------------------------------------------
# Token windows
# --------------------------------------------------------------------------------------------


def token_windows(documents: list[Document], tokenizer, context_size: int,
                  ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch"]]:
    """Pack documents into windows of ``context_size`` tokens, each starting with BOS.

    Documents of one (source, language) are joined with blank lines and cut into pieces of
    ``context_size − 1`` tokens, so nearly every window is full; the last piece of each group is
    right-padded. Returns the windows and the number of real tokens in each (BOS included).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for document in documents:
        groups.setdefault((document.source, document.language), []).append(document.text)
    body = context_size - 1
    rows, lengths = [], []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for key in sorted(groups):
        ids: list[int] = []
        for text in groups[key]:
            ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
        for start in range(0, len(ids), body):
            piece = ids[start:start + body]
            if len(piece) < 8:
                continue
            rows.append([tokenizer.bos_token_id, *piece] + [pad] * (body - len(piece)))
            lengths.append(len(piece) + 1)
    if not rows:
        raise UserError("The corpus produced no token windows; is it empty?")
    return torch.tensor(rows), torch.tensor(lengths)


def valid_mask(lengths: Int[torch.Tensor, "batch"], context_size: int,
               excluded_positions: int) -> torch.Tensor:
    """Boolean [batch, pos]: real tokens past the excluded leading positions."""
    positions = torch.arange(context_size)[None, :]
    return (positions < lengths[:, None]) & (positions >= excluded_positions)


# --------------------------------------------------------------------------------------------
# Activation cache: every layer from one forward pass, on disk, resumable
# --------------------------------------------------------------------------------------------


def cache_activations(model: HookedTransformer, windows: Int[torch.Tensor, "batch pos"],
                      lengths: Int[torch.Tensor, "batch"], layers: tuple[int, ...], folder: Path,
                      *, batch_size: int, excluded_positions: int, desc: str = "caching") -> int:
    """Write the residual stream after each of ``layers`` for every valid token of ``windows``
    to ``folder/layer_L.bf16`` (rows of d_model bfloat16, as uint16) and return the row count.

    One forward pass, stopped after the highest layer, serves all layers. Progress is recorded
    in ``folder/progress.json`` after each batch, so an interrupted run resumes where it stopped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mask = valid_mask(lengths, windows.shape[1], excluded_positions)
    n_rows = int(mask.sum())
    d_model = model.cfg.d_model
    progress_path = folder / "progress.json"
    progress = read_json(progress_path) if progress_path.is_file() else {}
    expected = {"n_windows": len(windows), "n_rows": n_rows, "layers": list(layers)}
    if progress.get("plan") != expected:
        progress = {"plan": expected, "windows_done": 0}
    maps = {
        layer: np.lib.format.open_memmap(
            folder / f"layer_{layer}.npy", mode="r+" if progress["windows_done"] else "w+",
            dtype=np.uint16, shape=(n_rows, d_model))
        for layer in layers
    }
    names = {hook_name_for(layer) for layer in layers}
    row = int(mask[: progress["windows_done"]].sum())
    bar = tqdm(total=len(windows), initial=progress["windows_done"], desc=desc, unit="window")
    for start in range(progress["windows_done"], len(windows), batch_size):
        batch = windows[start:start + batch_size]
        batch_mask = mask[start:start + batch_size]
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=lambda name: name in names,
                                            stop_at_layer=max(layers) + 1)
        count = int(batch_mask.sum())
        for layer in layers:
            rows = cache[hook_name_for(layer)][batch_mask].to(torch.bfloat16)
            maps[layer][row:row + count] = rows.view(torch.uint16).numpy()
        row += count
        for array in maps.values():
            array.flush()
        progress["windows_done"] = start + len(batch)
        write_json(progress_path, progress)
        bar.update(len(batch))
    bar.close()
    return n_rows


def load_cached(folder: Path, layer: int) -> Float[torch.Tensor, "batch d_model"]:
    """The cached activations of ``layer`` as a bfloat16 tensor (in memory)."""
    path = folder / f"layer_{layer}.npy"
    progress_path = folder / "progress.json"
    if not path.is_file() or not progress_path.is_file():
        raise UserError(f"No cached activations for layer {layer} in {folder}; run the cache "
                        "stage first (python -m yapo_interp.sae_train --stage cache).")
    progress = read_json(progress_path)
    if progress["windows_done"] < progress["plan"]["n_windows"]:
        raise UserError(f"The activation cache in {folder} is incomplete; run the cache stage "
                        "again to finish it.")
    array = np.load(path, mmap_mode="r")
    return torch.from_numpy(np.array(array)).view(torch.bfloat16)  # a writable copy in memory


def shuffled_batches(activations: Float[torch.Tensor, "batch d_model"], batch_size: int,
                     seed: int, skip: int = 0) -> Iterator[Float[torch.Tensor, "batch d_model"]]:
    """Endless float32 batches, a fresh permutation per pass; ``skip`` batches are dropped
    first (so a resumed run sees the same stream as an uninterrupted one)."""
    n = len(activations)
    per_pass = n // batch_size
    step = 0
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(n, generator=generator)
        for index in range(per_pass):
            if step >= skip:
                rows = order[index * batch_size:(index + 1) * batch_size]
                yield activations[rows].float()
            step += 1
        epoch += 1
