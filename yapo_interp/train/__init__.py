"""Training steering vectors: BiPO and YaPO by preference optimisation, CAA and SAS by averaging.

**BiPO / YaPO** (algorithm 1 of the paper). ``v`` starts at zero; each minibatch of ``B``
preference triples draws one direction ``d ~ U{−1, +1}`` and takes an AdamW step on the loss of
eq. 1 (BiPO, dense ``v ∈ R^{d_model}``) or eq. 4 (YaPO, sparse ``v ∈ R^{d_sae}`` steering through a
frozen SAE); the model and the SAE stay frozen, ``λ = 1``. ``sae-dense`` (issue 13's control)
trains ``c ∈ R^{d_sae}`` with the same objective and SAE, applied as ``h + d·λ·(c @ W_dec)``: YaPO's
parameterisation without the encoder and the ReLU. Defaults are appendix A's: AdamW
(β₁ 0.9, β₂ 0.999, weight decay 0.05), learning rate 5e-4, cosine schedule with 100 warm-up steps,
batch 4, 20 epochs; β = 0.1 (appendix A does not state β; 0.1 is BiPO's default). The warm-up is
capped at ``warmup_ratio`` (10 %) of the run, so a short run reaches its peak learning rate: 100
warm-up steps in a 32-step run would leave the rate at a fraction of the peak throughout. The
effective schedule is saved in ``run.json``. ``v`` is float32 whatever the model's dtype (AdamW
updates of a bf16 ``v`` vanish below bf16 resolution). The ``paper`` preset adds what the
authors' code does beyond appendix A: gradient clipping at 1.0, EOS appended to responses, and a
global batch of 32 (here ``gradient_accumulation`` micro-batches of 4, one ``d`` drawn per
micro-batch as each of their 8 data-parallel ranks draws its own).

**Sparse YaPO** (issue 14, an option): AdamW leaves most of YaPO's ``d_sae`` entries non-zero with
similar magnitudes, which no reader can attribute. ``l1`` adds the penalty ``l1·‖v‖₁`` as a
proximal step: after each AdamW step every entry is shrunk towards zero by ``lr·l1`` and set to
exactly zero when it would cross (soft thresholding), so ``l1`` is in units of an Adam step (an
entry survives while its gradients push it by more than ``l1`` of the step); ``max_features = K``
then keeps the ``K`` entries of largest ``|v|`` and zeroes the rest (a projection onto K-sparse
vectors), so the vector uses at most ``K`` features throughout training (``project_sparse``). Both
apply to the methods whose ``v`` lives in SAE code space (yapo, sae-dense); the step log records the
number of non-zero entries.

The data split is by question (``yapo_interp.data.pairs``): test questions never reach training;
the eval loss is measured on a *validation* split carved from the training questions. The
vector's metadata records every question it was fitted or validated on, and ``evaluate``
refuses to score it on any of them.
The loss is computed by ``objective.PreferenceObjective`` with the fast path on (cached layer-L
activations and reference log-probs, unembedding at response positions only, chosen and rejected
batched with a shared prompt) — proven equal to the plain computation in
``tests/test_objective.py``.

**CAA** (Panickssery et al., 2024) — the mean difference of layer-L activations between chosen and
rejected responses, ``v = mean_i( mean_t h_t(x_i + y_w^i) ) − mean_i( mean_t h_t(x_i + y_l^i) )``
with ``t`` running over the response tokens. **SAS** (Bayat et al., 2025) — the same in SAE code
space, ``Enc(h_t)`` instead of ``h_t``. Both are one pass over the data; they are applied with eq. 2
and eq. 3 like BiPO and YaPO.

Outputs in ``--out``: ``log.jsonl`` (one record per step: ``step, epoch, train_loss, direction,
lr, grad_norm, perturbation, nonzero`` — ``nonzero`` counts v's non-zero entries after the step,
``perturbation`` is ``‖Φ(h) − h‖`` averaged over the minibatch's
tokens with the ``v`` the step's loss used, from the cached activations; eval records: ``step,
epoch, eval_loss, eval_loss_plus, eval_loss_minus`` — eval loss is the
objective's expectation over ``d = ±1`` on held-out pairs), ``vectors/epoch_XX`` (a vector after
each epoch, XX from 01), ``vector`` (the final one), ``checkpoint.pt`` (v, optimizer, scheduler, RNG
state, step; written atomically each epoch) and ``run.json`` (settings and versions). Re-running
the same command resumes from the checkpoint; the same seed gives the same vector.

    python -m yapo_interp.train --method yapo --country egypt --setting localized
    python -m yapo_interp.train --method bipo --behaviour power-seeking --epochs 5
    python -m yapo_interp.train --method bipo --behaviour-csv power_seeking.csv --epochs 5

From Python, the same run is ``run_train(model, TrainRunConfig(training=TrainConfig(...),
data=DataSelection(country="egypt")), out)``, and ``config.to_argv()`` is its command line. The
package's modules, by concern: ``config`` (:class:`TrainConfig`, the schedule), ``selection``
(which pairs: :class:`DataSelection`, :class:`BehaviourSelection`), ``checkpoint`` (the
:class:`TrainState` and its checkpoint), ``loop`` (:func:`train_steering_vector`, the
:class:`PreferenceTrainer` and CAA / SAS), ``stage`` (:class:`TrainRunConfig`, :func:`run_train`),
``flags`` (the command's flags) and ``cli`` (``main``).
"""

from yapo_interp.train.checkpoint import (CHECKPOINT, LOG, TrainState, load_checkpoint,
                                          new_state, restore, run_identity, save_checkpoint)
from yapo_interp.train.cli import main
from yapo_interp.train.config import (FAST_PATH_FLAGS, MEAN_DIFFERENCE_METHODS, Schedule,
                                      TrainConfig, training_config, training_schedule)
from yapo_interp.train.flags import DEFAULT_OUT, build_parser, config_from_args
from yapo_interp.train.loop import (PreferenceTrainer, draw_direction, evaluate_loss,
                                    fit_preference_vector, frozen, mean_difference_vector,
                                    project_sparse, resolve_layer, train_steering_vector)
from yapo_interp.train.selection import (BehaviourSelection, DataSelection, TrainInputs,
                                         behaviour_pairs, behaviour_set_pairs, build_pairs,
                                         pairs_hash, read_inputs, select_items, training_pairs)
from yapo_interp.train.stage import (TrainResult, TrainRunConfig, load_training_sae,
                                     prepare_inputs, run_name, run_train)

__all__ = [
    "CHECKPOINT", "DEFAULT_OUT", "FAST_PATH_FLAGS", "LOG", "MEAN_DIFFERENCE_METHODS",
    "BehaviourSelection", "DataSelection", "PreferenceTrainer", "Schedule", "TrainConfig",
    "TrainInputs", "TrainResult", "TrainRunConfig", "TrainState", "behaviour_pairs",
    "behaviour_set_pairs", "build_pairs", "build_parser", "config_from_args", "draw_direction",
    "evaluate_loss", "fit_preference_vector", "frozen", "load_checkpoint", "load_training_sae",
    "main", "mean_difference_vector", "new_state", "pairs_hash", "prepare_inputs",
    "project_sparse", "read_inputs", "resolve_layer", "restore", "run_identity", "run_name",
    "run_train", "save_checkpoint", "select_items", "train_steering_vector", "training_config",
    "training_pairs", "training_schedule",
]
