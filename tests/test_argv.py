"""Every stage config writes its own command line: ``from_args(parse(config.to_argv())) ==
config``, for configs far from the defaults as well as the defaults; what no flag can say is
refused, never silently dropped."""

from pathlib import Path

import pytest

from yapo_interp.argv import command_line, flag, switch
from yapo_interp.attribution import cli as attribution_cli
from yapo_interp.attribution.config import AttributionConfig, AttributionRunConfig
from yapo_interp.errors import UserError
from yapo_interp.evaluate import cli as evaluate_cli
from yapo_interp.evaluate.conditions import EvalConfig
from yapo_interp.evaluate.stage import EvaluateConfig
from yapo_interp.objective import FastPath
from yapo_interp.patching import PatchingConfig
from yapo_interp.patching import build_parser as patching_parser
from yapo_interp.train import (BehaviourSelection, DataSelection, TrainConfig, TrainRunConfig,
                               build_parser as train_parser)


def test_flags_and_command_line():
    assert flag("--x", None) == [] and flag("--x", ()) == []
    assert flag("--x", 0.5) == ["--x", "0.5"] and flag("--x", (1, 2)) == ["--x", "1", "2"]
    assert switch("--no-y", True) == ["--no-y"] and switch("--no-y", False) == []
    assert command_line("train", ["--out", "a b"]) == "python -m yapo_interp.train --out 'a b'"


@pytest.mark.parametrize("config", [
    PatchingConfig(),
    PatchingConfig(countries=("morocco",), layers=(3, 5), site="mlp_out", pairs_per_country=2,
                   batch_pairs=1, score="sum", dataset="data.jsonl", seed=4, model="gemma-2-2b",
                   share_prompts=False),
])
def test_patching_config_round_trips(config):
    assert PatchingConfig.from_args(patching_parser().parse_args(config.to_argv())) == config


def test_patching_config_refuses_what_no_flag_sets():
    with pytest.raises(UserError, match="prompt_style='chat'"):
        PatchingConfig(prompt_style="chat").to_argv()


@pytest.mark.parametrize("config", [
    TrainRunConfig(training=TrainConfig(method="yapo", layer=9, lr=0.5),
                   data=DataSelection(country="egypt")),
    TrainRunConfig(
        training=TrainConfig(method="bipo", layer=7, beta=0.2, lr=0.01, weight_decay=0.0,
                             warmup_steps=3, warmup_ratio=None, max_grad_norm=2.0,
                             gradient_accumulation=2, batch_size=3, epochs=2, seed=5,
                             eval_every=4, fast_path=FastPath(share_prompt=False,
                                                              cache_reference=False)),
        data=DataSelection(country="morocco", setting="both", rejected="generated",
                           test_fraction=0.3, validation_fraction=0.1, split_seed=2,
                           max_pairs=16, data="cultural.jsonl"),
        sae="some/folder", sae_id="layer_7", model="embedded"),
    TrainRunConfig(training=TrainConfig(method="yapo", layer=9, lr=0.5, l1=0.1, max_features=8,
                                        fast_path=FastPath.plain()),
                   data=BehaviourSelection(behaviour="power-seeking", template="chat",
                                           strict=True, validation_fraction=0.5, max_pairs=4)),
    TrainRunConfig(training=TrainConfig(method="caa", layer=15, max_grad_norm=1.0,
                                        gradient_accumulation=8, append_eos=True),
                   data=BehaviourSelection(csv=Path("pairs.csv"), test_fraction=0.1),
                   preset="paper"),
])
def test_train_config_round_trips(config):
    assert TrainRunConfig.from_args(train_parser().parse_args(config.to_argv())) == config


def test_train_config_refuses_what_no_flag_sets():
    egypt = DataSelection(country="egypt")
    with pytest.raises(UserError, match=r"training\.multiplier=2\.0"):
        TrainRunConfig(training=TrainConfig(method="bipo", layer=9, lr=0.5, multiplier=2.0),
                       data=egypt).to_argv()
    with pytest.raises(UserError, match=r"training\.append_eos=True"):  # the preset decides it
        TrainRunConfig(training=TrainConfig(method="bipo", layer=9, lr=0.5, append_eos=True),
                       data=egypt).to_argv()


@pytest.mark.parametrize("config", [
    EvaluateConfig(countries=("egypt",), scoring=EvalConfig(style="auto")),
    EvaluateConfig(countries=("egypt", "morocco"), vectors=("runs/a/vector", "runs/b"),
                   multipliers=(0.5, 2.0), baseline=False, stability=("runs/a",), split="all",
                   test_fraction=0.3, split_seed=1, dataset="d.jsonl", max_items=3,
                   scoring=EvalConfig(mode="boxed", settings=("both",), style="chat",
                                      loglik_score="sum", batch_size=2, boxed_max_new_tokens=9,
                                      shuffle_options_seed=None, open_max_new_tokens=7,
                                      alpha=0.5, n_bootstrap=10, seed=3),
                   judge="openai", judge_base_url="http://localhost:1/v1", judge_model="m",
                   judge_cache=Path("cache.jsonl"), judge_timeout=5.0, judge_retries=1,
                   judge_deadline=9.0, sae="folder", sae_id="x", preset="paper", model="m2"),
])
def test_evaluate_config_round_trips(config):
    args = evaluate_cli.build_parser().parse_args(config.to_argv())
    assert EvaluateConfig.from_args(args) == config


def test_evaluate_config_never_writes_the_api_key():
    config = EvaluateConfig(countries=("egypt",), judge="openai", judge_api_key="secret")
    assert "secret" not in config.to_argv()
    with pytest.raises(UserError, match="confidence"):
        EvaluateConfig(countries=("egypt",), scoring=EvalConfig(confidence=0.9)).to_argv()


@pytest.mark.parametrize("config", [
    AttributionRunConfig(bipo=Path("runs/bipo/vector"), yapo=Path("runs/yapo/vector")),
    AttributionRunConfig(
        bipo=Path("b"), yapo=Path("y"),
        analysis=AttributionConfig(attribution="static", method="cosine", strength=2.0, k=5,
                                   n_examples=2, max_prompts=10, batch_size=3, max_features=7,
                                   feature_pages=False),
        prompts_from="none", preset="paper", model="m", device="cuda:1", seed=3,
        image_formats=()),
])
def test_attribution_config_round_trips(config):
    args = attribution_cli.build_parser().parse_args(config.to_argv())
    assert AttributionRunConfig.from_args(args) == config


def test_attribution_config_refuses_what_no_flag_sets():
    with pytest.raises(UserError, match="n_tokens"):
        AttributionRunConfig(bipo=Path("b"), yapo=Path("y"),
                             analysis=AttributionConfig(n_tokens=3)).to_argv()
