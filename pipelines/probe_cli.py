"""`rillet probe ...`: the sequence-model probes as commands, each writing JSON and a PNG to --out-dir.

    rillet probe collapse --out-dir runs/p/c --family ones_zero --lengths 4 16 64 256 1024
    rillet probe collapse --out-dir runs/p/pc --model.kind perceiver --lengths 4 16 64
    rillet probe oversquash --out-dir runs/p/o --length 64 --model.transformer.window 8
    rillet probe task --out-dir runs/p/count --task count --separator-every 4
    rillet probe collapse --out-dir runs/p/ct --model.weights runs/p/count/model.eqx
    rillet probe plot --inputs runs/p/c/collapse.json runs/p/ct/collapse.json --out fig.png

The Python API (rillet.evals.probes) takes any eqx.Module with the signature in evals/probes/model_api.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal

from rillet.errors import ConfigError
from rillet.learners.networks.transformer import TransformerConfig

__all__ = ["ModelOptions", "probe_commands", "build_model"]

DEFAULT_LENGTHS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The probed model: a randomly initialised (or --weights) transformer, or PAC's Perceiver."""

    kind: Literal["transformer", "perceiver"] = "transformer"
    transformer: TransformerConfig = TransformerConfig()
    weights: str = ""  # a model.eqx from `rillet probe task` (its model.json beside it replaces --transformer.*)
    perceiver: str = "xs"  # Perceiver preset (learners/networks/perceiver.py PRESETS), for kind=perceiver
    seed: int = 0


def build_model(options: ModelOptions):
    """The eqx.Module the options describe."""
    import equinox as eqx
    import jax

    from rillet.learners.networks.transformer import DecoderTransformer

    key = jax.random.PRNGKey(options.seed)
    if options.kind == "perceiver":
        from rillet.evals.probes.perceiver_adapter import PerceiverSequence
        from rillet.learners.networks import perceiver

        net = perceiver.PerceiverActorCritic(perceiver.get_config(options.perceiver), [4], [2], 5, 7, key)
        return PerceiverSequence(net, options.transformer.vocab_size, jax.random.fold_in(key, 1))
    if not options.weights:
        return DecoderTransformer(options.transformer, key)
    config_path = os.path.splitext(options.weights)[0] + ".json"
    if not os.path.exists(options.weights) or not os.path.exists(config_path):
        raise ConfigError(f"--model.weights {options.weights!r} needs the file and {config_path} beside it "
                          "(both written by `rillet probe task --out-dir DIR`).")
    with open(config_path) as f:
        config = TransformerConfig(**json.load(f))
    return eqx.tree_deserialise_leaves(options.weights, DecoderTransformer(config, key))


def _write(out_dir: str, name: str, result: dict, plot) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(result, f)
    png = plot({name: result}, os.path.join(out_dir, f"{name}.png"))
    print(f"rillet probe {name}: wrote {os.path.join(out_dir, name)}.json and {png}")
    return result


def collapse(out_dir: str, model: ModelOptions = ModelOptions(), lengths: tuple[int, ...] = DEFAULT_LENGTHS,
             family: Literal["ones", "ones_zero", "repeat_last"] = "ones_zero",
             dtypes: tuple[Literal["float32", "bfloat16"], ...] = ("float32", "bfloat16"),
             separator_every: int = 0, separator: int = 2) -> dict:
    """Representational collapse: last-token distance of pairs differing only at the end, vs length."""
    from rillet.evals.probes.collapse import collapse_profile
    from rillet.evals.probes.figures import plot_collapse

    result = collapse_profile(build_model(model), lengths, family, dtypes, separator_every, separator)
    for dtype, res in result["dtypes"].items():
        print(f"  {dtype}: final-layer ∞-distance at n={result['lengths'][-1]}: {res['inf'][-1][-1]:.3g}; "
              f"collapse length {res['collapse_length']}; {res['wall_s']} s")
    return _write(out_dir, "collapse", {**result, "model": dataclasses.asdict(model)}, plot_collapse)


def oversquash(out_dir: str, model: ModelOptions = ModelOptions(), length: int = 64, num_sequences: int = 8,
               vocab: int = 4, dtype: Literal["float32", "bfloat16"] = "float32", seed: int = 0) -> dict:
    """Over-squashing: ‖∂y_n/∂v_i‖ over positions i (mean over random sequences), beside the path bound."""
    import jax.numpy as jnp
    import numpy as np

    from rillet.evals.probes.figures import plot_oversquash
    from rillet.evals.probes.oversquash import path_bound, region_means, sensitivity_profile
    from rillet.learners.networks.attention import cast_floating

    net = cast_floating(build_model(model), {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype])
    tokens = np.random.default_rng(seed).integers(0, vocab, (num_sequences, length))
    result = sensitivity_profile(net, tokens)
    window = getattr(net, "window", 0)
    result.update(bound=path_bound(length, len(result["layers"]), window).tolist(),
                  bound_uniform=path_bound(length, len(result["layers"]), window, "uniform").tolist(),
                  window=window, dtype=dtype, model=dataclasses.asdict(model))
    if length >= 8:
        result["summary"] = region_means(result["output"])
        print("  output sensitivity / max: " + ", ".join(f"{k} {v:.3g}" for k, v in result["summary"].items()))
    out = np.asarray(result["output"])
    print(f"  output sensitivity: first token {out[0]:.3g}, middle {out[length // 2]:.3g}, last {out[-1]:.3g}")
    return _write(out_dir, "oversquash", result, plot_oversquash)


def task(out_dir: str, task: Literal["count", "copy_first", "copy_last"] = "count", steps: int = 1500,
         batch_size: int = 64, learning_rate: float = 1e-3, train_lengths: tuple[int, int] = (4, 16),
         eval_lengths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256), separator_every: int = 0,
         samples: int = 256, seed: int = 0, positions: Literal["rotary", "sinusoidal", "none"] = "rotary",
         window: int = 0, num_layers: int = 2) -> dict:
    """Trains the small transformer on a synthetic task at short lengths; accuracy vs length, fp32 and bf16."""
    import time

    import equinox as eqx

    from rillet.evals.probes.figures import plot_accuracy
    from rillet.evals.probes.tasks import accuracy_vs_length, task_config, train_task

    config = task_config(positions=positions, window=window, num_layers=num_layers)
    t0 = time.perf_counter()
    model, history = train_task(task, config, steps, batch_size, learning_rate, train_lengths, separator_every, seed)
    train_s = time.perf_counter() - t0
    accuracy = {d: accuracy_vs_length(model, task, eval_lengths, samples, separator_every, d, seed + 1)
                for d in ("float32", "bfloat16")}
    os.makedirs(out_dir, exist_ok=True)
    eqx.tree_serialise_leaves(os.path.join(out_dir, "model.eqx"), model)
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f)
    print("  accuracy (float32): " + ", ".join(f"{n}: {a:.2f}" for n, a in zip(eval_lengths, accuracy["float32"])))
    result = {"task": task, "train_lengths": list(train_lengths), "eval_lengths": list(eval_lengths),
              "separator_every": separator_every, "seed": seed, "steps": steps, "history": history,
              "accuracy": accuracy, "train_s": round(train_s, 1), "config": dataclasses.asdict(config)}
    return _write(out_dir, "task", result, plot_accuracy)


def plot(inputs: tuple[str, ...], out: str, labels: tuple[str, ...] = ()) -> str:
    """One figure from several result JSONs of one kind (labels default to the parent folder names)."""
    from rillet.evals.probes.figures import plot_any

    if labels and len(labels) != len(inputs):
        raise ConfigError(f"--labels needs one label per input ({len(inputs)}), got {len(labels)}.")
    names = labels or tuple(os.path.basename(os.path.dirname(os.path.abspath(p))) for p in inputs)
    runs = {}
    for name, path in zip(names, inputs):
        with open(path) as f:
            runs[name] = json.load(f)
    print(f"rillet probe plot: wrote {plot_any(runs, out)}")
    return out


def probe_commands() -> dict:
    """`rillet probe NAME` -> function."""
    return {"collapse": collapse, "oversquash": oversquash, "task": task, "plot": plot}
