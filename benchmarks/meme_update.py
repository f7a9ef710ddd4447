"""What MEME's parts cost the learner: jitted `agent57.update` calls per second with MEME's parts on
(trust region, TD normalisation, distillation head, soft Watkins Q(lambda)) divided by the same with
them off (Agent57), on one fixed batch and the same network (same torso, sizes and N), in one process,
the two timed in alternating blocks so that the machine's drift hits both alike. Compilation excluded.

    .venv/bin/python benchmarks/meme_update.py                     # the MiniGrid runs' network (MLP 64, LSTM 64)
    .venv/bin/python benchmarks/meme_update.py --atari --batch 8   # Nature conv + LSTM 512 on Atari frames
    .venv/bin/python benchmarks/meme_update.py --torso nfnet       # both on the NFNet torso

Prints updates/s of each, and last the ratio MEME / Agent57 (the issue asks >= 0.85).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import agent57
from rillet.learners.meme import MEMEConfig

VECTOR = StepSpec(ArraySpec((147,), "float32"), ArraySpec((), "int32"), num_actions=7, env_id="MiniGrid-like")
ATARI = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=18, env_id="Atari")
SMALL_NET = dict(burn_in=4, trace_length=16, lstm_size=64, hidden_sizes=(64,), novelty_hidden_sizes=(64,))
ATARI_NET = dict(burn_in=8, trace_length=16, lstm_size=512)


def configs(a) -> tuple[agent57.Agent57Config, MEMEConfig]:
    """(Agent57, MEME): MEME's defaults, then the shared network options and torso on both; MEME's parts
    off in the first."""
    net = {**(ATARI_NET if a.atari else SMALL_NET), "torso": a.torso, "memory_capacity": 64}
    meme = MEMEConfig(**net).validate()
    off = dict(estimator="retrace", trust_region=False, normalise_td=False, distillation=False)
    return dataclasses.replace(meme, **off).validate(), meme


def random_batch(spec: StepSpec, config, batch: int, seed: int) -> dict:
    """A [batch, L] sequence batch of every field and extra of `spec` (no padding, one j per sequence)."""
    rng = np.random.default_rng(seed)
    L, A = config.sequence_length, spec.num_actions
    obs = spec.observation
    observation = (rng.integers(0, 256, (batch, L, *obs.shape)).astype(np.uint8) if obs.np_dtype == np.uint8
                   else rng.normal(size=(batch, L, *obs.shape)).astype(np.float32))
    extras = {}
    for name, s in spec.extras.items():
        if np.issubdtype(s.np_dtype, np.integer):
            high = config.num_policies if name == "policy_index" else A
            extras[name] = np.repeat(rng.integers(0, high, (batch, 1)), L, 1).astype(s.np_dtype)
        else:
            extras[name] = rng.uniform(0.1, 1.0, (batch, L, *s.shape)).astype(np.float32)
    flags = np.zeros((batch, L), bool)
    return {"observation": observation, "action": rng.integers(0, A, (batch, L)).astype(np.int32),
            "reward": rng.normal(size=(batch, L)).astype(np.float32), "discount": np.ones((batch, L), np.float32),
            "is_first": flags, "is_last": flags, "is_terminal": flags, "mask": ~flags,
            "weights": np.ones((batch,), np.float32), "extras": extras}


def timed_block(state, batch, config, iters: int):
    """(state, seconds) of `iters` updates."""
    start = time.perf_counter()
    for _ in range(iters):
        state, metrics = agent57.update(state, batch, config)
    jax.block_until_ready((state, metrics))
    return state, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atari", action="store_true", help="Atari frames and the Nature conv torso + LSTM 512")
    p.add_argument("--torso", default="auto", help="the torso of both (auto, mlp, nature_dqn, nfnet)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=20, help="updates per timed block")
    p.add_argument("--blocks", type=int, default=5, help="alternating timed blocks per agent")
    a = p.parse_args()
    spec_env = ATARI if a.atari else VECTOR
    runs = {}
    for name, config in zip(("Agent57", "MEME"), configs(a)):
        spec = agent57.spec_extras(spec_env, config)
        state = agent57.init(jax.random.PRNGKey(0), spec, config)
        batch = jax.device_put(random_batch(spec, config, a.batch, 0))
        state, compile_s = timed_block(state, batch, config, 2)
        runs[name] = {"state": state, "batch": batch, "config": config, "seconds": 0.0}
        print(f"{name}: compile + 2 updates {compile_s:.1f} s")
    for _ in range(a.blocks):
        for run in runs.values():
            run["state"], seconds = timed_block(run["state"], run["batch"], run["config"], a.iters)
            run["seconds"] += seconds
    rates = {name: a.blocks * a.iters / run["seconds"] for name, run in runs.items()}
    device = jax.devices()[0]
    print(f"device {device.platform}; batch {a.batch} x {runs['MEME']['config'].sequence_length} steps; "
          f"torso {a.torso}; {'Atari' if a.atari else 'vector'} observations")
    for name, rate in rates.items():
        print(f"{name}: {rate:.2f} updates/s")
    print(f"ratio MEME / Agent57: {rates['MEME'] / rates['Agent57']:.3f}")


if __name__ == "__main__":
    main()
