"""Train, ship and evaluate the sparse autoencoders of the embedded model (Gemma 3 270M).

YaPO (section 2 of the paper) steers a model in the latent space of a sparse autoencoder at the
steering layer ``L``. With ``h = A_L(x)`` the residual stream after block ``L``
(``blocks.L.hook_resid_post``), the SAE is an encoder/decoder pair

    Enc(h) = TopK(W_encᵀ (h − b_dec) + b_enc),        Dec(z) = W_decᵀ z + b_dec,

trained so that ``Dec(Enc(h)) ≈ h`` with at most ``k`` active latents per token. The sparse
steering of equation 3, ``h' = Dec(ReLU(Enc(h) + d·λ·v)) + (h − Dec(Enc(h)))``, adds the learned
vector ``v ∈ R^{d_sae}`` to ``Enc(h)`` and decodes; the second term puts back what the SAE could
not reconstruct, so steering with ``v = 0`` leaves the model unchanged whatever the SAE's error.
What the SAE's quality buys is *meaning*: the better ``Dec(Enc(h))`` explains ``h`` with few
latents, the more each coordinate of ``v`` is one recognisable feature (section 4's attribution).

The paper uses Gemma Scope's JumpReLU SAEs for Gemma-2-2B; none exist offline for Gemma 3 270M, so
this module trains them with SAELens' own classes (``TopKTrainingSAE`` and ``SAETrainer``):

1. **Corpus** (:mod:`yapo_interp.corpus`): multilingual text in the paper's five languages.
2. **Activations**: one forward pass per batch to the highest requested layer caches
   ``blocks.L.hook_resid_post`` for *every* requested layer at once, on disk (bf16 memory maps),
   resumable. The BOS position is excluded: Gemma 3's residual norm there is 10–15x that of the
   other positions (measured: ≈69k vs ≈5k at layer 7) and would dominate the reconstruction loss.
3. **Training**: TopK SAEs (Gao et al. 2024) with SAELens' AuxK loss against dead latents and
   activation-norm scaling (folded into the weights at the end). TopK fixes ``L0 = k`` on every
   token, in and out of distribution, and reaches a good explained variance in few steps — what a
   two-core CPU budget needs. ``--architecture batchtopk`` trains SAELens' BatchTopK instead,
   saved as a JumpReLU SAE (the class of Gemma Scope).
4. **Shipping**: the inference SAE (``TopKSAE``) is stored with ``SAE.save_model`` in bfloat16
   under ``yapo_interp/saes/layer_L/``; ``load_sae("embedded", layer=L)`` loads it in float32.
5. **Evaluation** (``--evaluate``): on held-out corpus text and on the held-out half of the
   cultural prompts, per layer, excluding BOS:

   * ``L0`` — mean number of non-zero latents per token;
   * explained variance ``1 − Σ‖h − ĥ‖² / Σ‖h − h̄‖²`` (sums over tokens, ``h̄`` their mean);
   * CE-loss recovered ``(CE_zero − CE_sae) / (CE_zero − CE_clean)``, where ``CE_sae`` splices
     ``ĥ`` into the forward pass at layer ``L`` and ``CE_zero`` replaces ``h`` by zero (BOS kept);
   * dead fraction — latents that never fire on the held-out corpus tokens.

Run ``python -m yapo_interp.sae_train --layers 7 9 11`` to rebuild everything (resumable; work
files under ``--work``), and ``python -m yapo_interp.sae_train --evaluate`` to print the figures.
From Python: ``run_sae_training(model, SAETrainConfig(...), work=..., saes=...)`` and
``run_sae_evaluation(model, config, work=..., saes=..., out=...)``.

The package's modules: ``config`` (:class:`SAETrainConfig`), ``activations`` (token windows, the
activation cache), ``training`` (SAELens training and shipping), ``quality`` (the figures of
step 5), ``stage`` (the pipeline's calls) and ``cli`` (the flags and ``main``).
"""



from yapo_interp.sae_train.activations import (cache_activations, load_cached, shuffled_batches,
                                               token_windows, valid_mask)
from yapo_interp.sae_train.cli import build_parser, config_from_args, load_embedded, main
from yapo_interp.sae_train.config import DEFAULT_WORK, MODEL_NAME, SAETrainConfig
from yapo_interp.sae_train.quality import (ce_loss_recovered, evaluate_saes, evaluation_sets,
                                           format_results, reconstruction_stats)
from yapo_interp.sae_train.stage import (cache_training_activations, run_sae_evaluation,
                                         run_sae_training, ship_info)
from yapo_interp.sae_train.training import make_training_sae, ship_sae, train_layer

__all__ = [
    "DEFAULT_WORK", "MODEL_NAME", "SAETrainConfig", "build_parser", "cache_activations",
    "cache_training_activations", "ce_loss_recovered", "config_from_args", "evaluate_saes",
    "evaluation_sets", "format_results", "load_cached", "load_embedded", "main",
    "make_training_sae", "reconstruction_stats", "run_sae_evaluation", "run_sae_training",
    "ship_info", "ship_sae", "shuffled_batches", "token_windows", "train_layer", "valid_mask",
]
