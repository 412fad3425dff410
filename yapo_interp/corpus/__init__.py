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

The package's modules, by concern: ``text`` (:class:`Document`, the languages, the stable hash,
the language filter), ``debian`` (catalogs and help pages from Debian packages, their
licences), ``cultural`` (the project's dataset, training questions only), ``generated``
(:class:`RestrictedSampler` and its seed prompts) and ``build`` (:class:`CorpusConfig`,
:func:`build_corpus`, :func:`corpus_manifest`, :func:`load_corpus`).
"""

from yapo_interp.corpus.build import (SOURCE_LICENCES, CorpusConfig, build_corpus,
                                      corpus_manifest, load_corpus)
from yapo_interp.corpus.cultural import (CULTURAL_DIR, CULTURAL_SPLIT, CULTURAL_SPLIT_RULE,
                                         cultural_documents, cultural_question_ids)
from yapo_interp.corpus.debian import (DEBIAN_PACKAGES, HELP_CODES, LOCALE_CODES,
                                       SYSTEM_LOCALE_DIR, catalog_files, clean_message,
                                       fetch_debian_packages, gettext_documents,
                                       html_paragraphs, libreoffice_help_documents,
                                       owning_packages, package_licence, read_catalog)
from yapo_interp.corpus.generated import SEED_PROMPTS, RestrictedSampler, seed_prompts
from yapo_interp.corpus.text import (LANGUAGES, SCRIPTS, Document, is_heldout, looks_like,
                                     script_fraction, stable_hash)

__all__ = [
    "CULTURAL_DIR", "CULTURAL_SPLIT", "CULTURAL_SPLIT_RULE", "DEBIAN_PACKAGES", "HELP_CODES",
    "LANGUAGES", "LOCALE_CODES", "SCRIPTS", "SEED_PROMPTS", "SOURCE_LICENCES",
    "SYSTEM_LOCALE_DIR", "CorpusConfig", "Document", "RestrictedSampler", "build_corpus",
    "catalog_files", "clean_message", "corpus_manifest", "cultural_documents",
    "cultural_question_ids", "fetch_debian_packages", "gettext_documents", "html_paragraphs",
    "is_heldout", "libreoffice_help_documents", "load_corpus", "looks_like", "owning_packages",
    "package_licence", "read_catalog", "script_fraction", "seed_prompts", "stable_hash",
]
