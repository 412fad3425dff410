"""Layer discovery by activation patching (appendix B of the YaPO paper).

Which layer should a steering vector act on? The paper answers with *activation patching*: take
a question in two forms — *localized*, which names the country ("I am from Morocco, ...") and
*non-localized*, which only speaks the country's dialect — and ask where in the network the
difference between them lives. Run the non-localized prompt, but at layer ``j`` overwrite the
residual stream at its last token with the localized prompt's last-token residual
``h^{(j)}_{t}(x_localized)``. If the model's answer moves from the Western default towards the
country's answer, layer ``j`` carries the country signal at that position. Sweeping ``j`` gives an
*activation patching curve* (paper figure 3); the paper picks layer 15 of Gemma-2-2B from it.

Because attention is causal, the patch leaves every earlier position untouched, and nothing below
layer ``j`` changes either. So the clean run's residual stream *entering* block ``j`` is reused, and
each patched run only executes blocks ``j..N`` (``start_at_layer``): about half the cost of a full
forward pass per layer, with identical results (tested).

The answer is scored as in the rest of the toolkit: each option of the question (one per country of
the language group plus the Western control) is appended to the prompt as a completion, its
log-probability is computed from logits at the option's positions only, and a softmax over the
options' mean token log-probs (``--score mean``, length-normalised; ``sum`` is available) gives
``p_country`` and ``p_western`` — the probability, among the question's options, of the asking
country's answer and of the Western one.

Beside this option-level score, the *first-token readout* (issue 14) scores each option by the
log-probability of its first token alone, predicted at the last prompt position, again as a softmax
over the options (``p_country_first``, ``p_western_first``, ``effect_first``). A single-position
patch at a late layer reaches that prediction directly, while later option tokens also attend to
unpatched positions; options that share their first token tie on this readout.

Layer rule: for each layer ``j`` the *localization effect* is the mean over pairs of
``(p_country - p_western)`` after patching minus the same quantity in the clean non-localized run.
The chosen layer maximises the effect averaged over the requested countries (ties: earliest layer).

Patch sites: ``resid_pre`` / ``resid_post`` (the residual stream entering / leaving block ``j``),
``attn_out`` and ``mlp_out`` (the outputs of block ``j``'s attention and MLP).

Example::

    python -m yapo_interp.patching --countries egypt morocco

Layout: ``core`` (tensor functions: batches, the patched forward pass, option scores per layer),
``analysis`` (pairs from dataset items, option probabilities, summary and layer rule), ``stage``
(``PatchingConfig``, the resumable ``run_patching`` and its files), ``cli``.
"""

from yapo_interp.figures import patching_figure
from yapo_interp.patching.analysis import (PatchingPair, choose_layer, localization_gain,
                                           patching_pairs, score_pairs, summarise)
from yapo_interp.patching.cli import build_parser, main
from yapo_interp.patching.core import (SITES, PatchingScores, PromptResponseBatch,
                                       first_token_logprobs_from_residual, last_token_patch,
                                       patch_last_token_scores, patched_final_residual,
                                       site_hook_name, tokenize_prompt_response,
                                       tokenize_shared_prefix)
from yapo_interp.patching.stage import (PatchingConfig, PatchingResult, run_patching,
                                        save_patching)

__all__ = ["SITES", "PatchingConfig", "PatchingPair", "PatchingResult", "PatchingScores",
           "PromptResponseBatch", "build_parser", "choose_layer",
           "first_token_logprobs_from_residual", "last_token_patch", "localization_gain", "main",
           "patch_last_token_scores", "patched_final_residual", "patching_figure",
           "patching_pairs", "run_patching", "save_patching", "score_pairs", "site_hook_name",
           "summarise", "tokenize_prompt_response", "tokenize_shared_prefix"]
