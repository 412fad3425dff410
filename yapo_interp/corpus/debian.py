"""The Debian sources of the corpus: translation catalogs (``gettext``: the strings of the
installed packages and of LibreOffice's Arabic UI) and the LibreOffice help pages, downloaded
with ``apt-get download`` and unpacked without installing; the licences of the packages read."""

from __future__ import annotations

import gettext
import html
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from yapo_interp.corpus.text import Document, looks_like
from yapo_interp.errors import UserError

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
    """``pieces`` joined, in order, into documents of about ``block_chars`` characters."""
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
    """The text of an HTML page's paragraphs, headings, list items and cells (four words or
    more each), scripts and styles left out."""
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
