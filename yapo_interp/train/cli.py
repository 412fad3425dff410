"""``python -m yapo_interp.train``: ``main`` parses the flags (:mod:`yapo_interp.train.flags`) into
a :class:`~yapo_interp.train.stage.TrainRunConfig`, checks what can be checked before the model
load (device, ``--out``, layer, shipped SAE, the data files), loads the model and calls
:func:`~yapo_interp.train.stage.run_train`."""

from __future__ import annotations

import torch

from yapo_interp import models  # load_model through the module: tests patch it there
from yapo_interp.cli import check_run_args, check_sae_available
from yapo_interp.seeding import set_seed
from yapo_interp.train.flags import DEFAULT_OUT, build_parser
from yapo_interp.train.stage import TrainRunConfig, prepare_inputs, run_name, run_train


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv``); 0 when the vector is saved."""
    args = build_parser().parse_args(argv)
    set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainRunConfig.from_args(args)
    layer = config.training.layer
    check_run_args(args, layers=[layer])  # device, --out, layer range: before the model load
    if config.training.uses_sae and not config.sae:
        check_sae_available(models.get_preset(config.preset).sae_for_layer(layer)[0], layer)
    inputs = prepare_inputs(config)  # before the model: fail fast on bad data
    model = models.load_model(config.model_name, device=args.device)
    out = run_name(config, inputs) if args.out == DEFAULT_OUT else args.out
    run_train(model, config, out, inputs=inputs)
    return 0
