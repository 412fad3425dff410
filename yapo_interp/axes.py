"""The named axes of the toolkit's tensor annotations, written down once.

Every jaxtyping annotation (``Float[torch.Tensor, "batch pos d_model"]``) names its axes with the
words of :data:`AXES`. Within one call a name stands for one size: when the annotations are
checked (the test suite checks them in the pure-math modules, ``tests/conftest.py``), two
arguments that disagree on ``d_model``, or a tensor with one axis too many, fail at once. Besides
these names an annotation may use ``...`` (any leading axes), ``*name`` (several axes), a
literal size (``2``) and sums of names (``prefix_pos+suffix_pos``); ``tests/test_shapes.py``
checks that the package uses no other name.
"""

AXES: dict[str, str] = {
    # model widths
    "d_model": "the residual stream's width (TransformerLens cfg.d_model)",
    "d_sae": "an SAE's number of latents (SAELens cfg.d_sae)",
    "d_vocab": "the vocabulary (the unembedding's columns)",
    "d": "a steering vector's width: d_model for the dense methods, d_sae for the SAE ones",
    "layer": "the model's layers (one entry per patched or cached layer)",
    # batches and sequences
    "batch": "the rows of a batch: sequences, preference pairs, instances, activation vectors",
    "pos": "token positions of a right-padded sequence",
    "prompt_pos": "positions of a batch's prompts (the objective's shared prompt run)",
    "chosen_pos": "positions of the chosen responses (y_w)",
    "rejected_pos": "positions of the rejected responses (y_l)",
    "prompt": "the distinct prompts of a shared-prefix batch",
    "row": "the (prompt, response) rows of a shared-prefix batch",
    "prefix_pos": "positions of a shared-prefix batch's prompts, run once per prompt",
    "suffix_pos": "positions of a row's suffix: the rest of its prompt and its response",
    "prefix_pos_plus_suffix_pos": "prefix_pos and suffix_pos together (a row's attention mask)",
    "n": "a flat list local to one call (the response tokens a mask keeps, token ids asked for)",
    "token": "activation vectors of real tokens, flattened over prompts (BOS left out)",
    # SAE features and answers
    "feature": "the SAE features listed (rows of W_dec picked out)",
    "n_atoms": "dictionary atoms of a sparse fit: d_sae decoder rows, or 2·d_sae when signed",
    "option": "the options of one multiple-choice question",
}
