"""Seconds per optimiser step and peak memory of BiPO / YaPO training: this toolkit's fast path
against a faithful plain implementation of the same objective, on the embedded model.

The plain implementation is what the authors' code does each step: a full forward of the policy
(hook at ``blocks.L.hook_resid_post``) and of the reference on prompt+chosen and on
prompt+rejected, logits at every position, backward through the upper layers
(``objective.plain_logprobs``). Ours is ``objective.PreferenceObjective`` with every shortcut on
(cached layer-L activations and reference log-probs, unembedding at response positions only,
chosen and rejected in one batch sharing the prompt's key/value cache). Both unembed with the
same ``[d_vocab, d_model]`` copy of ``W_U``, made once (``logprobs.unembedding_matrix``), instead
of the copy TransformerLens makes on every call.

Both run the same batches with the same directions ``d`` and the same AdamW + cosine schedule,
step by step side by side (so a busy CPU slows both alike). ``v`` starts from the same small
random vector rather than zero, so the losses differ from log 2 and their agreement means
something. Time per step is the mean after one warm-up step; memory is the peak resident set
size sampled during the steps (and how much a step adds on top of what was resident before it).
The last line is ``speedup: N.Nx`` (YaPO, plain s/step over ours).

    python benchmarks/train_step.py [--steps 3] [--layer 9] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import PeakMemory  # noqa: E402
from yapo_interp.data import PreferencePair  # noqa: E402
from yapo_interp.objective import (  # noqa: E402
    FastPath,
    PreferenceObjective,
    plain_logprobs,
    preference_loss,
)

KEYS = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
SYNTHETIC = [  # used when the cultural data cannot be loaded: fixed multilingual text
    ("I am from Egypt. It is Friday and the whole family has gathered at my grandmother's house "
     "for a long, slow breakfast together. Nobody is in a hurry today. What do we usually eat "
     "for this big breakfast?\nAnswer:", " Ful medames with bread, eggs and pickles.",
     " Pancakes with maple syrup and orange juice."),
    ("Soy de México y mañana es el cumpleaños de mi abuela; toda la familia va a venir a la casa "
     "y queremos preparar algo especial para la comida del mediodía. ¿Qué cocinamos?\nRespuesta:",
     " Mole poblano con arroz y tortillas.", " Hamburguesas con papas fritas."),
    ("أنا من المغرب، واليوم الجمعة والعائلة كلها مجتمعة عند الجدة بعد الصلاة. ما هو الطبق الذي "
     "نأكله عادة في هذا اليوم؟\nالجواب:", " الكسكس بالخضار واللحم.", " بيتزا بالجبن."),
    ("मैं भारत से हूँ और आज दिवाली है। पूरा परिवार घर पर इकट्ठा हुआ है और हम शाम को मिठाई बाँटते "
     "हैं। हम आमतौर पर कौन सी मिठाई बनाते हैं?\nउत्तर:", " लड्डू और बर्फी।", " चॉकलेट केक।"),
]


def load_pairs(n: int) -> tuple[list[PreferencePair], str]:
    try:
        from yapo_interp import data

        items = data.load_cultural(countries=["egypt"])
        pairs = data.build_preference_pairs(items, setting="both", rejected="western")
        source = f"cultural data, Egypt, both settings ({len(pairs)} pairs available)"
    except Exception as error:  # noqa: BLE001 - any failure: fall back to the fixed text
        pairs = [PreferencePair(*triple) for triple in SYNTHETIC]
        source = f"synthetic multilingual text (cultural data unavailable: {error})"
    return [pairs[i % len(pairs)] for i in range(n)], source


def load_benchmark_sae(model, layer: int):
    from yapo_interp.models import ModelLoadError, load_sae

    try:
        return load_sae("embedded", layer=layer, model=model), f"shipped SAE for layer {layer}"
    except ModelLoadError:
        from sae_lens import StandardSAE, StandardSAEConfig
        from sae_lens.saes.sae import SAEMetadata

        torch.manual_seed(0)
        sae = StandardSAE(StandardSAEConfig(
            d_in=model.cfg.d_model, d_sae=4096,
            metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_resid_post")))
        for parameter in sae.parameters():
            parameter.requires_grad_(False)
        return sae, "random SAELens StandardSAE, width 4096 (no shipped SAE for this layer yet)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up step")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["bipo", "yapo"])
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default 0: torch's default); on a CPU shared with "
                             "other jobs, 1 thread is often faster and steadier")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import get_cosine_schedule_with_warmup

    from yapo_interp.models import load_model
    from yapo_interp.train import TrainConfig, frozen

    started = time.time()
    model = load_model("embedded")
    sae, sae_source = load_benchmark_sae(model, args.layer)
    n_steps = 1 + args.steps
    pairs, data_source = load_pairs(n_steps * args.batch_size)
    config = TrainConfig()
    print(f"model: {model.cfg.model_name} (embedded, float32, CPU, {torch.get_num_threads()} "
          f"threads), layer {args.layer}, batch {args.batch_size}, {args.steps} timed steps after "
          f"1 warm-up step; load average at start {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"data: {data_source}")
    print(f"SAE: {sae_source}")

    rows, speedups = [], {}
    with frozen(model, sae):
        for method in args.methods:
            used_sae = sae if method == "yapo" else None
            ours = PreferenceObjective(model, args.layer, sae=used_sae, beta=config.beta,
                                       fast_path=FastPath())
            plain = PreferenceObjective(model, args.layer, sae=used_sae, beta=config.beta,
                                        fast_path=FastPath.plain())
            cache_started = time.time()
            with PeakMemory() as cache_memory:
                ours_data = ours.prepare(pairs, batch_size=config.forward_batch_size)
            cache_seconds = time.time() - cache_started
            cached_bytes = sum(t.numel() * t.element_size() for p in ours_data for t in
                               (p.resid_prompt, p.resid_chosen, p.resid_rejected))
            plain_data = plain.prepare(pairs)  # tokenization only
            unembedding = ours.unembedding  # W_U in the fast layout, made once, used by both
            prompt_tokens = sum(len(p.prompt) for p in plain_data) / len(plain_data)
            response_tokens = sum(len(p.chosen) + len(p.rejected)
                                  for p in plain_data) / (2 * len(plain_data))

            width = used_sae.cfg.d_sae if used_sae is not None else model.cfg.d_model
            generator = torch.Generator().manual_seed(0)
            start_v = 0.05 * torch.randn(width, generator=generator)
            if used_sae is None:
                start_v = start_v * 10
            directions = [1 if int(torch.randint(2, (1,), generator=generator)) else -1
                          for _ in range(n_steps)]
            runs = {}
            for name in ("plain", "ours"):
                v = start_v.clone().requires_grad_()
                optimizer = torch.optim.AdamW([v], lr=config.lr, betas=config.adam_betas,
                                              weight_decay=config.weight_decay)
                scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps,
                                                            config.epochs * 100)
                runs[name] = {"v": v, "optimizer": optimizer, "scheduler": scheduler,
                              "seconds": [], "losses": [], "peak": 0, "step_extra": 0}

            def step(name: str, index: int) -> None:
                run = runs[name]
                batch = slice(index * args.batch_size, (index + 1) * args.batch_size)
                direction = directions[index]
                tick = time.perf_counter()
                with PeakMemory() as memory:
                    if name == "plain":
                        result = plain_logprobs(model, plain_data[batch], args.layer,
                                                plain.steer_fn(run["v"], direction), unembedding)
                        loss = preference_loss(result["policy_chosen"], result["policy_rejected"],
                                               result["reference_chosen"],
                                               result["reference_rejected"], direction,
                                               config.beta)
                    else:
                        loss = ours.loss(ours_data[batch], run["v"], direction)
                    run["optimizer"].zero_grad()
                    loss.backward()
                    run["optimizer"].step()
                    run["scheduler"].step()
                run["seconds"].append(time.perf_counter() - tick)
                run["losses"].append(loss.item())
                run["peak"] = max(run["peak"], memory.peak)
                run["step_extra"] = max(run["step_extra"], memory.peak - memory.start)

            # float32 noise floor: the plain loss of the first batch, batched vs one example at
            # a time (different padding and matmul shapes, same mathematics)
            with torch.no_grad():
                first = plain_data[: args.batch_size]
                steer_fn = plain.steer_fn(start_v, directions[0])
                parts = [plain_logprobs(model, [pair], args.layer, steer_fn, unembedding)
                         for pair in first]
                unbatched = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
                batched = plain_logprobs(model, first, args.layer, steer_fn, unembedding)
                floor = abs(float(
                    preference_loss(*(batched[k] for k in KEYS), directions[0], config.beta)
                    - preference_loss(*(unbatched[k] for k in KEYS), directions[0], config.beta)))

            for index in range(n_steps):  # side by side: plain step i, then our step i
                step("plain", index)
                step("ours", index)

            for name in ("plain", "ours"):
                run = runs[name]
                timed = run["seconds"][1:]
                rows.append({"method": method, "impl": name,
                             "s_per_step": sum(timed) / len(timed),
                             "warmup_s": run["seconds"][0],
                             "peak_mib": run["peak"] / 2**20,
                             "step_mib": run["step_extra"] / 2**20,
                             "losses": run["losses"]})
            plain_row, ours_row = rows[-2], rows[-1]
            speedups[method] = plain_row["s_per_step"] / ours_row["s_per_step"]
            loss_gap = max(abs(a - b) for a, b in zip(plain_row["losses"], ours_row["losses"]))
            v_gap = float((runs["plain"]["v"] - runs["ours"]["v"]).abs().max())
            print(f"\n[{method}] prompts {prompt_tokens:.1f} tokens, responses "
                  f"{response_tokens:.1f} tokens on average; directions d = {directions}")
            print(f"[{method}] ours caches once: {cache_seconds:.1f} s for {len(pairs)} pairs "
                  f"({cache_seconds / len(pairs):.2f} s/pair; {cached_bytes / 2**20:.1f} MiB of "
                  f"layer-{args.layer} activations; peak RSS while caching "
                  f"{cache_memory.peak / 2**20:.0f} MiB)")
            for row in (plain_row, ours_row):
                losses = " ".join(f"{loss:.7f}" for loss in row["losses"])
                print(f"[{method}] {row['impl']:>5}: {row['s_per_step']:6.2f} s/step "
                      f"(warm-up {row['warmup_s']:.2f} s), peak RSS {row['peak_mib']:6.0f} MiB, "
                      f"+{row['step_mib']:5.0f} MiB per step; losses {losses}")
            print(f"[{method}] max |loss difference| {loss_gap:.2e} (float32 noise floor: the "
                  f"plain loss batched vs one example at a time differs by {floor:.2e}); max |v "
                  f"difference| after {n_steps} steps {v_gap:.2e}; speed-up "
                  f"{speedups[method]:.1f}x")

    print(f"\n{'method':<6} {'plain s/step':>12} {'ours s/step':>11} {'plain peak MiB':>14} "
          f"{'ours peak MiB':>13} {'speed-up':>8}")
    for method in args.methods:
        plain_row, ours_row = [r for r in rows if r["method"] == method]
        print(f"{method:<6} {plain_row['s_per_step']:>12.2f} {ours_row['s_per_step']:>11.2f} "
              f"{plain_row['peak_mib']:>14.0f} {ours_row['peak_mib']:>13.0f} "
              f"{speedups[method]:>7.1f}x")
    print(f"(total benchmark time {time.time() - started:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.1f})")
    print(f"speedup: {speedups.get('yapo', next(iter(speedups.values()))):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
