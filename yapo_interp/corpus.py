"""An offline multilingual text corpus for training the embedded model's sparse autoencoders.

A sparse autoencoder (SAE) learns a dictionary of directions in which the residual stream
``h = A_L(x)`` of layer ``L`` is sparse: ``h ≈ Dec(Enc(h))`` with few active latents. YaPO
(section 2 of the paper, equation 3) steers in that latent space, ``h' = Dec(ReLU(Enc(h) + d·λ·v))
+ (h − Dec(Enc(h)))``, so the dictionary must have seen the text the steering will act on: the
cultural prompts of appendix D in English, Spanish, Portuguese, Arabic and Hindi. No model hub or
data hub is reachable here, so the corpus is assembled from what a Debian machine with PyPI
access can get:

* ``gettext`` — translation catalogs (``.mo``) of the Debian packages installed under
  ``/usr/share/locale`` (coreutils, apt, glib, GTK, systemd, PostgreSQL, iso-codes, ...) plus
  LibreOffice's Arabic UI catalogs (``libreoffice-l10n-ar``): the translated strings give
  Spanish, Portuguese, Arabic and Hindi; their ``msgid`` originals give English.
* ``libreoffice_help`` — the LibreOffice help pages (``libreoffice-help-{en-us,es,pt,pt-br,hi}``,
  MPL-2.0), paragraph by paragraph; paragraphs left untranslated (English in a Spanish page, Latin
  script in a Hindi page) are dropped.
* ``cultural`` — the project's own cultural dataset (``yapo_interp/data/cultural/*.jsonl``), only
  the *training* questions of the canonical steering split (:data:`CULTURAL_SPLIT`: the
  question-level hash split of ``yapo_interp.data.pairs`` at its default test fraction and seed
  0). The test questions of that split are held out to evaluate the SAEs and are never trained
  on, so no steering evaluation on them can have been seen by the dictionary. The SAE's
  ``cfg.json`` lists the question ids it saw, and ``evaluate`` refuses to score a sparse vector
  on any of them (a user who evaluates under another split seed is told so).
* ``generated`` — text sampled from Gemma 3 270M itself, continuing short prompts about everyday
  culture written in each language (:func:`seed_prompts`). Sampling runs over the part of the
  vocabulary that the other sources use, which makes it several times cheaper on a CPU (the
  262,144-row unembedding dominates the cost of a step).

Every part is a list of :class:`Document` written as JSONL under a work folder, so a build can
stop and resume; :func:`corpus_manifest` records each source with its licence and token count.
Nothing here is stored in the repository: the recipe is the code.
"""

from __future__ import annotations

import gettext
import hashlib
import html
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from yapo_interp.data.pairs import DEFAULT_TEST_FRACTION, SPLIT_RULE, is_test_question
from yapo_interp.errors import UserError

LANGUAGES = ("english", "spanish", "portuguese", "arabic", "hindi")
LOCALE_CODES: dict[str, tuple[str, ...]] = {
    "spanish": ("es",),
    "portuguese": ("pt", "pt_BR"),
    "arabic": ("ar",),
    "hindi": ("hi",),
}
HELP_CODES: dict[str, tuple[str, ...]] = {
    "english": ("en-US",),
    "spanish": ("es",),
    "portuguese": ("pt", "pt-BR"),
    "hindi": ("hi",),
}
DEBIAN_PACKAGES = (
    "libreoffice-help-en-us", "libreoffice-help-es", "libreoffice-help-pt",
    "libreoffice-help-pt-br", "libreoffice-help-hi", "libreoffice-l10n-ar",
)
SYSTEM_LOCALE_DIR = Path("/usr/share/locale")
CULTURAL_DIR = Path(__file__).parent / "data" / "cultural"

# Unicode blocks that identify a script; a text "is" Arabic/Hindi when most of its letters are.
# The steering split whose test questions the SAE corpus must never contain.
CULTURAL_SPLIT = {"test_fraction": DEFAULT_TEST_FRACTION, "seed": 0}
CULTURAL_SPLIT_RULE = {"rule": SPLIT_RULE, **CULTURAL_SPLIT}

SCRIPTS = {"arabic": (0x0600, 0x06FF), "hindi": (0x0900, 0x097F)}


@dataclass(frozen=True)
class Document:
    """A piece of text with the language it is in and the source it came from."""

    text: str
    language: str
    source: str


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


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same on every run and machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def is_heldout(text: str, every: int) -> bool:
    return stable_hash(text) % every == 0


def script_fraction(text: str, language: str) -> float:
    """Fraction of the letters of ``text`` in ``language``'s script (Arabic/Devanagari)."""
    low, high = SCRIPTS[language]
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return 0.0
    return sum(low <= ord(char) <= high for char in letters) / len(letters)


def looks_like(text: str, language: str) -> bool:
    """Cheap language filter: Arabic and Hindi by script; the Latin-script languages by the
    absence of Arabic/Devanagari letters (English fall-backs are removed elsewhere)."""
    if language in SCRIPTS:
        return script_fraction(text, language) > 0.6
    return all(script_fraction(text, other) < 0.1 for other in SCRIPTS)


# --------------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------------


def fetch_debian_packages(packages: Iterable[str], folder: Path) -> Path:
    """``apt-get download`` each package into ``folder`` and unpack it under ``folder/root``
    (no installation, no root needed beyond apt's cache). Already unpacked packages are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder / "root"
    for package in packages:
        marker = folder / f"{package}.unpacked"
        if marker.exists():
            continue
        try:
            subprocess.run(["apt-get", "download", package], cwd=folder, check=True,
                           capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            raise UserError(f"Could not download the Debian package {package} ({detail.strip()[:200]}). "
                            "Run `apt-get update` first, or build on a Debian machine.") from error
        debs = sorted(folder.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        marker.write_text(debs[-1].name)
    return root


_LICENCE = re.compile(r"^License:\s*([A-Za-z][\w.+-]*(?:\s+(?:and|or|with)\s+[\w.+-]+)*)\s*$",
                      re.M)


def package_licence(copyright_file: Path) -> str:
    """The first short licence name (``License: GPL-2+``) of a Debian copyright file, or a
    pointer to the file when it has none (free-text, pre-DEP-5 copyright files)."""
    if not copyright_file.is_file():
        return "unknown"
    match = _LICENCE.search(copyright_file.read_text(errors="replace"))
    return match.group(1).strip() if match else f"see {copyright_file}"


def owning_packages(paths: list[Path]) -> dict[str, str]:
    """Map each path to the Debian package that installed it (``dpkg -S``), where known."""
    owners: dict[str, str] = {}
    if not paths:
        return owners
    result = subprocess.run(["dpkg", "-S", *map(str, paths)], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0].split(",")[0].strip()
    return owners


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def read_catalog(path: Path) -> dict[str, str]:
    """The (msgid -> msgstr) pairs of a compiled gettext catalog, plural forms flattened."""
    with path.open("rb") as handle:
        try:
            catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except (OSError, UnicodeDecodeError, ValueError, IndexError):
            return {}
    pairs = {}
    for key, value in catalog.items():
        msgid = key[0] if isinstance(key, tuple) else key
        if msgid and isinstance(value, str):
            pairs[msgid] = value
    return pairs


_PLACEHOLDER = re.compile(r"%[-+ #0-9.]*[a-zA-Z]|\{[^}]*\}|\$\{[^}]*\}|<[^>]+>|_(?=\w)|&(?=\w)")


def clean_message(text: str) -> str:
    """A catalog string without format placeholders, markup and accelerator marks."""
    text = _PLACEHOLDER.sub("", text).replace("\\n", "\n")
    return re.sub(r"[ \t]+", " ", text).strip()


def catalog_files(locale_dirs: list[Path], language: str) -> list[Path]:
    """The compiled catalogs for ``language`` (English: the originals in the Spanish ones)."""
    codes = LOCALE_CODES.get(language, ("es",))
    return [path for base in locale_dirs for code in codes
            for path in sorted((base / code / "LC_MESSAGES").glob("*.mo"))]


def gettext_documents(locale_dirs: list[Path], language: str, *,
                      block_chars: int = 1500) -> tuple[list[Document], list[Path]]:
    """Documents from the translation catalogs under ``locale_dirs`` for ``language``.

    For English the ``msgid`` originals of the Spanish catalogs are used. Strings shorter than
    three words are dropped (menu labels teach little); the rest are joined, in catalog order,
    into blocks of about ``block_chars`` characters. Returns the documents and the catalogs read.
    """
    messages: list[str] = []
    seen: set[str] = set()
    files = catalog_files(locale_dirs, language)
    for path in files:
        for msgid, msgstr in read_catalog(path).items():
            text = clean_message(msgid if language == "english" else msgstr)
            if len(text.split()) < 3 or text in seen or not looks_like(text, language):
                continue
            if language != "english" and text == clean_message(msgid):
                continue  # untranslated
            seen.add(text)
            messages.append(text)
    return _blocks(messages, language, "gettext", block_chars), files


def _blocks(pieces: list[str], language: str, source: str, block_chars: int) -> list[Document]:
    documents, current, size = [], [], 0
    for piece in pieces:
        current.append(piece)
        size += len(piece)
        if size >= block_chars:
            documents.append(Document("\n".join(current), language, source))
            current, size = [], 0
    if current:
        documents.append(Document("\n".join(current), language, source))
    return documents


_PARAGRAPH = re.compile(r"<(p|h[1-6]|li|td)\b[^>]*>(.*?)</\1>", re.S | re.I)


def html_paragraphs(page: str) -> list[str]:
    page = re.sub(r"<script.*?</script>|<style.*?</style>", "", page, flags=re.S | re.I)
    paragraphs = []
    for _, inner in _PARAGRAPH.findall(page):
        text = html.unescape(re.sub(r"<[^>]+>", " ", inner))
        text = re.sub(r"\s+", " ", text).strip()
        if len(text.split()) >= 4:
            paragraphs.append(text)
    return paragraphs


def libreoffice_help_documents(help_root: Path, language: str, *,
                               block_chars: int = 1500) -> list[Document]:
    """Documents from LibreOffice's help pages in ``language`` (paragraphs joined per page).

    A translated help page keeps untranslated paragraphs in English; those are found by
    comparing with the English page of the same path and dropped.
    """
    codes = HELP_CODES.get(language)
    if not codes:
        return []
    english_root = help_root / "en-US"
    documents: list[Document] = []
    seen: set[str] = set()
    for code in codes:
        root = help_root / code
        for page in sorted(root.rglob("*.html")):
            paragraphs = html_paragraphs(page.read_text(encoding="utf-8", errors="replace"))
            english: set[str] = set()
            if language != "english":
                twin = english_root / page.relative_to(root)
                if twin.is_file():
                    english = set(html_paragraphs(twin.read_text(encoding="utf-8",
                                                                 errors="replace")))
            kept = [text for text in paragraphs
                    if text not in english and text not in seen and looks_like(text, language)]
            seen.update(kept)
            if kept:
                documents.extend(_blocks(kept, language, "libreoffice_help", block_chars))
    return documents


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _record_language(record: dict, path: Path) -> str:
    for key in ("language", "language_group", "lang", "group"):
        value = str(record.get(key, "")).lower()
        for language in LANGUAGES:
            if value.startswith(language[:2]) and value[:3] == language[:3]:
                return language
    for language in LANGUAGES:
        if language in path.stem.lower():
            return language
    return "english"


def cultural_documents(folder: Path = CULTURAL_DIR) -> tuple[list[Document], list[Document]]:
    """The project's cultural dataset as (training, held-out) documents.

    Whatever the schema, every string of a record is its text (prompts, options, reference
    answer). A record is held out when its question is a test question of
    :data:`CULTURAL_SPLIT` (the steering split's own rule), so both forms and all countries of a
    test question stay out of the SAE's training text.
    """
    train: list[Document] = []
    heldout: list[Document] = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            texts = [text.strip() for text in _strings(record) if len(text.split()) >= 2]
            if not texts:
                continue
            document = Document("\n".join(texts), _record_language(record, path), "cultural")
            (heldout if is_test_question(_question_key(record, texts), **CULTURAL_SPLIT)
             else train).append(document)
    return train, heldout


def _question_key(record: dict, texts: list[str]) -> str:
    return str(record.get("question_id") or record.get("id") or texts[0])


def cultural_question_ids(folder: Path = CULTURAL_DIR) -> list[str]:
    """The question ids whose text :func:`cultural_documents` puts in the training corpus."""
    seen: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("question_id"):
                key = str(record["question_id"])
                if not is_test_question(key, **CULTURAL_SPLIT):
                    seen.add(key)
    return sorted(seen)


# Short openings about everyday culture, in each language, that the model continues. Topics
# follow the paper's (meals, greetings, weddings, holidays, games, proverbs, family, ...).
SEED_PROMPTS: dict[str, tuple[str, ...]] = {
    "english": (
        "In our family, Sunday lunch always", "The most important holiday of the year is",
        "When guests arrive at a wedding, they", "My grandmother taught me a proverb:",
        "Children in my neighbourhood like to play", "A typical breakfast here consists of",
        "The history of the old market in the city", "During the festival, people usually",
        "When you meet an elder, it is polite to", "The local football team",
        "Here is a simple recipe for", "The school year begins in",
        "My favourite song from childhood", "On the news today:", "Dear friend, I am writing to",
        "The weather this week", "Tips for travellers visiting the capital:",
        "A short story: The old fisherman", "Religion plays a role in daily life because",
        "At the end of the working day, people",
    ),
    "spanish": (
        "En mi familia, la comida del domingo siempre", "La fiesta más importante del año es",
        "Cuando los invitados llegan a una boda,", "Mi abuela me enseñó un refrán:",
        "Los niños de mi barrio suelen jugar", "Un desayuno típico aquí consiste en",
        "La historia del mercado viejo de la ciudad", "Durante las fiestas del pueblo, la gente",
        "Cuando saludas a una persona mayor, es educado", "El equipo de fútbol local",
        "Aquí tienes una receta sencilla de", "El año escolar empieza en",
        "Mi canción favorita de la infancia", "Noticias de hoy:", "Querido amigo, te escribo para",
        "El tiempo esta semana", "Consejos para viajeros que visitan la capital:",
        "Un cuento corto: El viejo pescador", "En Navidad, mi familia", "Al salir del trabajo, la gente",
    ),
    "portuguese": (
        "Na minha família, o almoço de domingo sempre", "A festa mais importante do ano é",
        "Quando os convidados chegam a um casamento,", "A minha avó ensinou-me um provérbio:",
        "As crianças do meu bairro gostam de brincar", "Um pequeno-almoço típico aqui é",
        "Um café da manhã típico no Brasil tem", "A história do mercado antigo da cidade",
        "Durante o carnaval, as pessoas", "Quando cumprimentamos uma pessoa mais velha,",
        "O time de futebol da cidade", "Aqui está uma receita simples de",
        "O ano letivo começa em", "Notícias de hoje:", "Querido amigo, escrevo-te para",
        "O tempo esta semana", "Dicas para quem visita a capital:",
        "Um conto curto: O velho pescador", "No Natal, a minha família",
        "Depois do trabalho, as pessoas",
    ),
    "arabic": (
        "في عائلتنا، غداء يوم الجمعة دائماً", "أهم عيد في السنة هو",
        "عندما يصل الضيوف إلى حفل الزفاف،", "علمتني جدتي مثلاً شعبياً:",
        "يحب الأطفال في حارتنا أن يلعبوا", "يتكون الفطور التقليدي عندنا من",
        "تاريخ السوق القديم في المدينة", "في شهر رمضان، يجتمع الناس",
        "عندما تقابل شخصاً كبيراً في السن، من الأدب أن", "فريق كرة القدم المحلي",
        "إليك وصفة بسيطة لتحضير", "يبدأ العام الدراسي في",
        "أغنيتي المفضلة منذ الطفولة", "أخبار اليوم:", "عزيزي صديقي، أكتب إليك لكي",
        "حالة الطقس هذا الأسبوع", "نصائح للمسافرين إلى العاصمة:",
        "قصة قصيرة: الصياد العجوز", "في العيد، تزور العائلات", "بعد انتهاء العمل، يذهب الناس",
    ),
    "hindi": (
        "हमारे परिवार में रविवार का खाना हमेशा", "साल का सबसे बड़ा त्योहार",
        "जब मेहमान शादी में आते हैं, तो", "मेरी दादी ने मुझे एक कहावत सिखाई:",
        "हमारे मोहल्ले के बच्चे खेलना पसंद करते हैं", "यहाँ का एक सामान्य नाश्ता",
        "शहर के पुराने बाज़ार का इतिहास", "दिवाली के दिन लोग",
        "बड़ों से मिलते समय हम", "स्थानीय क्रिकेट टीम",
        "यह रही एक आसान विधि", "स्कूल का नया साल शुरू होता है",
        "बचपन का मेरा पसंदीदा गाना", "आज की खबरें:", "प्रिय मित्र, मैं तुम्हें यह पत्र लिख रहा हूँ",
        "इस हफ़्ते का मौसम", "राजधानी घूमने वालों के लिए सुझाव:",
        "एक छोटी कहानी: बूढ़ा मछुआरा", "होली के त्योहार पर", "काम के बाद लोग",
    ),
}


def seed_prompts(language: str) -> tuple[str, ...]:
    try:
        return SEED_PROMPTS[language]
    except KeyError:
        raise UserError(f"No seed prompts for language {language!r}; "
                        f"choose from {', '.join(SEED_PROMPTS)}.") from None


# --------------------------------------------------------------------------------------------
# Text sampled from the model
# --------------------------------------------------------------------------------------------


class RestrictedSampler:
    """Samples continuations from the embedded Gemma 3 270M over a sub-vocabulary.

    The input embedding and the (tied) unembedding are cut down to the rows of ``token_ids``;
    prompts are mapped into that index space and samples mapped back. This is exactly the
    model's next-token distribution renormalised over the kept tokens, at a fraction of the
    cost of the 262,144-way softmax.
    """

    def __init__(self, token_ids: Iterable[int], model_dir: Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from yapo_interp.models import ensure_embedded_model

        folder = model_dir or ensure_embedded_model()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        special = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                   self.tokenizer.bos_token_id, 0, 1, 2, 106}
        kept = sorted({int(token) for token in token_ids} | {int(s) for s in special if s is not None})
        self.kept = torch.tensor(kept)
        self.to_sub = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
        self.to_sub[self.kept] = torch.arange(len(kept))
        embedding = model.get_input_embeddings()
        weight = torch.nn.Parameter(embedding.weight.data[self.kept].clone(), requires_grad=False)
        embedding.weight = weight
        embedding.num_embeddings = len(kept)
        model.lm_head.weight = weight
        model.lm_head.out_features = len(kept)
        model.config.vocab_size = len(kept)
        model.eval()
        self.model = model
        self.eos = [int(self.to_sub[i]) for i in (1, 106) if int(self.to_sub[i]) >= 0]
        self.pad = int(self.to_sub[self.tokenizer.pad_token_id])

    def sample(self, prompts: list[str], *, max_new_tokens: int, temperature: float,
               top_p: float, seed: int) -> list[str]:
        import torch

        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        ids = batch["input_ids"]
        sub_ids = self.to_sub[ids]
        unknown = sub_ids < 0
        sub_ids[unknown] = self.pad
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=sub_ids, attention_mask=batch["attention_mask"] & ~unknown,
                do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                max_new_tokens=max_new_tokens, pad_token_id=self.pad, eos_token_id=self.eos,
            )
        full = self.kept[out[:, ids.shape[1]:]]
        continuations = self.tokenizer.batch_decode(full, skip_special_tokens=True)
        return [prompt + continuation for prompt, continuation in zip(prompts, continuations)]


# --------------------------------------------------------------------------------------------
# Building the corpus
# --------------------------------------------------------------------------------------------


def _read_part(path: Path) -> list[dict]:
    from yapo_interp.io import read_jsonl

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
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from yapo_interp.io import append_jsonl, write_json
    from yapo_interp.models import ensure_embedded_model

    folder = work / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_embedded_model()))

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def write_part(name: str, documents: list[tuple[Document, int]], heldout_every: int) -> None:
        from yapo_interp.io import write_text

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
        from yapo_interp.io import write_text

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
