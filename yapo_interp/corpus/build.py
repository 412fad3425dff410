"""Building the corpus: every (source, language) part written as JSONL under a work folder, so a
build can stop and resume (:func:`build_corpus`), its manifest with licences and token counts
(:func:`corpus_manifest`), and reading a built corpus back (:func:`load_corpus`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoTokenizer

from yapo_interp.corpus.cultural import CULTURAL_DIR, cultural_documents
from yapo_interp.corpus.debian import (DEBIAN_PACKAGES, HELP_CODES, SYSTEM_LOCALE_DIR,
                                       fetch_debian_packages, gettext_documents,
                                       libreoffice_help_documents, owning_packages,
                                       package_licence)
from yapo_interp.corpus.generated import RestrictedSampler, seed_prompts
from yapo_interp.corpus.text import LANGUAGES, Document, is_heldout, stable_hash
from yapo_interp.errors import UserError
from yapo_interp.io import append_jsonl, read_jsonl, write_json, write_text
from yapo_interp.models import ensure_embedded_model


@dataclass(frozen=True)
class CorpusConfig:
    """How the corpus is built. Token caps are per (source, language) and count model tokens."""

    languages: tuple[str, ...] = LANGUAGES
    gettext_tokens: int = 80_000
    help_tokens: int = 90_000
    # Arabic has less real text here, so it gets all of its catalogs.
    gettext_tokens_arabic: int = 120_000
    # Model samples per language. Sampling ran at under 10 tokens/s on the shared 2-core CPU
    # that built the shipped SAEs, so they got a single batch (24 Arabic samples); on a free
    # machine raise these, e.g. (("arabic", 20_000), ("hindi", 20_000)).
    generated_tokens: tuple[tuple[str, int], ...] = (("arabic", 1_500),)
    generated_tokens_per_sample: int = 64
    generation_batch: int = 24
    temperature: float = 0.9
    top_p: float = 0.95
    heldout_every: int = 20  # one document in this many (by hash) is held out for evaluation
    seed: int = 0
    debian_packages: tuple[str, ...] = DEBIAN_PACKAGES
    extra_locale_dirs: tuple[str, ...] = field(default_factory=tuple)


def _read_part(path: Path) -> list[dict]:
    """The records of a corpus part (none when it is not written yet)."""
    return read_jsonl(path) if path.is_file() else []


def _capped(documents: list[Document], cap: int, count_tokens) -> list[tuple[Document, int]]:
    """Documents in a fixed pseudo-random order (by hash) until ``cap`` tokens are reached."""
    kept, total = [], 0
    for document in sorted(documents, key=lambda d: stable_hash(d.text)):
        if total >= cap:
            break
        tokens = count_tokens(document.text)
        kept.append((document, tokens))
        total += tokens
    return kept


def build_corpus(config: CorpusConfig, work: Path, *, log=print) -> dict:
    """Build (or finish building) the corpus under ``work/corpus`` and return its manifest.

    Each (source, language) part is a JSONL file of ``{"text", "language", "source",
    "heldout", "tokens"}`` records; a part that exists is not rebuilt, and generation resumes
    from the samples already written. ``work/corpus/manifest.json`` lists the parts with their
    licences and token counts.
    """
    folder = work / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_model()))

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def write_part(name: str, documents: list[tuple[Document, int]], heldout_every: int) -> None:
        lines = [json.dumps({"text": d.text, "language": d.language, "source": d.source,
                             "heldout": is_heldout(d.text, heldout_every), "tokens": n},
                            ensure_ascii=False) for d, n in documents]
        write_text(folder / f"{name}.jsonl", "\n".join(lines) + "\n")

    debian_root = fetch_debian_packages(config.debian_packages, work / "debs")
    locale_dirs = [SYSTEM_LOCALE_DIR, debian_root / "usr/lib/libreoffice/program/resource",
                   *map(Path, config.extra_locale_dirs)]
    help_root = debian_root / "usr/share/libreoffice/help"
    for language in config.languages:
        name = f"gettext_{language}"
        if not (folder / f"{name}.jsonl").is_file():
            documents, files = gettext_documents(locale_dirs, language)
            # which catalogs were read depends on what the machine has installed: keep the list
            write_json(folder / f"{name}.catalogs.json", sorted(map(str, files)))
            cap = config.gettext_tokens_arabic if language == "arabic" else config.gettext_tokens
            write_part(name, _capped(documents, cap, count_tokens),
                       config.heldout_every)
            log(f"[corpus] {name}: {len(documents)} blocks available")
        name = f"help_{language}"
        if language in HELP_CODES and not (folder / f"{name}.jsonl").is_file():
            documents = libreoffice_help_documents(help_root, language)
            write_part(name, _capped(documents, config.help_tokens, count_tokens),
                       config.heldout_every)
            log(f"[corpus] {name}: {len(documents)} blocks available")
    if not (folder / "cultural.jsonl").is_file():  # a snapshot: later edits do not move it
        train, heldout = cultural_documents()
        lines = [{"text": d.text, "language": d.language, "source": d.source, "heldout": flag,
                  "tokens": count_tokens(d.text)}
                 for documents, flag in ((train, False), (heldout, True)) for d in documents]
        write_text(folder / "cultural.jsonl",
                   "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        snapshot = {path.name: stable_hash(path.read_text(encoding="utf-8"))
                    for path in sorted(CULTURAL_DIR.glob("*.jsonl"))}
        write_json(folder / "cultural_snapshot.json", snapshot)

    def vocabulary() -> set[int]:
        """Token ids of every other part and of the seed prompts: the sampling vocabulary."""
        ids: set[int] = set()
        texts = [record["text"] for path in sorted(folder.glob("*.jsonl"))
                 if not path.name.startswith("generated_") for record in _read_part(path)]
        texts += [prompt for language in config.languages for prompt in seed_prompts(language)]
        for text in texts:
            ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids

    sampler = None
    budgets = dict(config.generated_tokens)
    for language in config.languages:
        path = folder / f"generated_{language}.jsonl"
        done = _read_part(path)
        total = sum(record["tokens"] for record in done)
        budget = budgets.get(language, 0)
        if total >= budget:
            continue
        if sampler is None:
            sampler = RestrictedSampler(vocabulary())
            log(f"[corpus] sampling over {len(sampler.kept)} of {len(sampler.to_sub)} tokens")
        prompts = list(seed_prompts(language))
        progress = tqdm(total=budget, initial=total,
                        desc=f"generating {language}", unit="tok")
        batch_index = len(done) // config.generation_batch
        while total < budget:
            batch = [prompts[(batch_index * config.generation_batch + i) % len(prompts)]
                     for i in range(config.generation_batch)]
            texts = sampler.sample(batch, max_new_tokens=config.generated_tokens_per_sample,
                                   temperature=config.temperature, top_p=config.top_p,
                                   seed=config.seed * 1_000_003 + stable_hash(language) % 997
                                   + batch_index)
            for text in texts:
                tokens = count_tokens(text)
                append_jsonl(path, {"text": text, "language": language, "source": "generated",
                                    "heldout": is_heldout(text, config.heldout_every),
                                    "tokens": tokens})
                total += tokens
                progress.update(tokens)
            batch_index += 1
        progress.close()

    catalogs = {Path(path) for listing in folder.glob("gettext_*.catalogs.json")
                for path in json.loads(listing.read_text())}
    manifest = corpus_manifest(folder, debian_root, sorted(catalogs))
    manifest["config"] = config
    write_json(folder / "manifest.json", manifest)
    return manifest


SOURCE_LICENCES = {
    "libreoffice_help": "MPL-2.0 (LibreOffice help, Debian packages libreoffice-help-*)",
    "cultural": "the project's own dataset (see yapo_interp/data/cultural/README.md)",
    "generated": "text sampled from Gemma 3 270M (Gemma Terms of Use)",
}


def corpus_manifest(folder: Path, debian_root: Path, catalogs: list[Path]) -> dict:
    """Token counts per (source, language, split) and the licence of each source."""
    parts = []
    for path in sorted(folder.glob("*.jsonl")):
        records = _read_part(path)
        for language in sorted({record["language"] for record in records}):
            mine = [r for r in records if r["language"] == language]
            source = mine[0]["source"]
            parts.append({
                "part": path.stem, "source": source, "language": language,
                "documents": len(mine),
                "train_tokens": sum(r["tokens"] for r in mine if not r["heldout"]),
                "heldout_tokens": sum(r["tokens"] for r in mine if r["heldout"]),
                "licence": SOURCE_LICENCES.get(source, "see gettext_packages"),
            })
    system = [path for path in catalogs if str(path).startswith(str(SYSTEM_LOCALE_DIR))]
    owners = owning_packages(system)
    packages: dict[str, str] = {}
    for path in catalogs:
        package = owners.get(str(path))
        if package is None and str(path).startswith(str(debian_root)):
            package = "libreoffice-l10n-ar"
        if package and package not in packages:
            copyright_file = Path("/usr/share/doc") / package / "copyright"
            if not copyright_file.is_file():
                copyright_file = debian_root / "usr/share/doc" / package / "copyright"
            packages[package] = package_licence(copyright_file)
    return {"parts": parts, "gettext_packages": dict(sorted(packages.items()))}


def load_corpus(folder: Path, *, heldout: bool) -> list[Document]:
    """The documents of a built corpus, training or held-out, in a fixed order."""
    documents = []
    for path in sorted(folder.glob("*.jsonl")):
        for record in _read_part(path):
            if bool(record["heldout"]) == heldout:
                documents.append(Document(record["text"], record["language"], record["source"]))
    if not documents:
        raise UserError(f"No {'held-out' if heldout else 'training'} documents in {folder}; "
                        "build the corpus first (python -m yapo_interp.sae_train --stage corpus).")
    return documents
