"""What vmapping K members buys a bootstrapped ensemble's learner: jitted DQN updates of one K-member
ensemble (`networks.ensemble`: stacked parameters, one `eqx.filter_vmap` call; priors and bootstrap
masks on) per second, against K single-member learners (each the same member network with its prior)
updated one after another on the same batch, on CPU, in one process. The two are timed in alternating
blocks so that the machine's drift hits both alike; compilation excluded.

    .venv/bin/python benchmarks/ensemble_update.py                    # K 10, Deep Sea 20x20, MLP (50, 50)
    .venv/bin/python benchmarks/ensemble_update.py --cartpole --k 20  # CartPole observations, 20 members

Prints updates/s of each (one "update" = every member takes one step), and last the ratio
vmapped / sequential (issue 17 asks >= 3 at K = 10).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import dqn

DEEP_SEA = StepSpec(ArraySpec((20, 20), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="bsuite/deep_sea/5")
CARTPOLE = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="CartPole-v1")


def batch_for(spec: StepSpec, batch_size: int, members: int, seed: int = 0) -> dict:
    """Random n-step transitions with bootstrap masks [B, K]."""
    rng = np.random.default_rng(seed)
    obs = (batch_size, *spec.observation.shape)
    return {"observation": rng.normal(size=obs).astype(np.float32),
            "action": rng.integers(0, spec.num_actions, batch_size).astype(np.int32),
            "reward": rng.normal(size=batch_size).astype(np.float32),
            "discount": np.full(batch_size, 0.97, np.float32),
            "next_observation": rng.normal(size=obs).astype(np.float32),
            "extras": {"bootstrap_mask": (rng.random((batch_size, members)) < 0.5).astype(np.float32)}}


def timed_block(step, states, calls: int):
    """(states, wall seconds) of `calls` steps."""
    start = time.perf_counter()
    for _ in range(calls):
        states = step(states)
    jax.block_until_ready(states)
    return states, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=10, help="ensemble members")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[50, 50])
    p.add_argument("--cartpole", action="store_true", help="CartPole's [4] observations instead of Deep Sea 20x20")
    p.add_argument("--calls", type=int, default=50, help="updates per timed block")
    p.add_argument("--blocks", type=int, default=5, help="alternating timed blocks per learner")
    a = p.parse_args()
    spec = CARTPOLE if a.cartpole else DEEP_SEA
    config = dqn.DQNConfig(hidden_sizes=tuple(a.hidden), ensemble_size=a.k, prior_scale=3.0,
                           bootstrap_probability=0.5, ensemble_acting="member")
    single = dataclasses.replace(config, ensemble_size=1)  # one member with its prior
    batch = batch_for(spec, a.batch, a.k)
    member_batches = [{**batch, "extras": {"bootstrap_mask": batch["extras"]["bootstrap_mask"][:, [k]]}}
                      for k in range(a.k)]
    keys = jax.random.split(jax.random.PRNGKey(0), a.k)
    runs = {
        "vmapped": (lambda s: dqn.update(s, batch, config)[0], dqn.init(keys[0], spec, config)),
        "sequential": (lambda ss: [dqn.update(s, b, single)[0] for s, b in zip(ss, member_batches)],
                       [dqn.init(k, spec, single) for k in keys]),
    }
    walls = {name: 0.0 for name in runs}
    states = {name: timed_block(step, state, 2)[0] for name, (step, state) in runs.items()}  # compile, warm up
    for _ in range(a.blocks):
        for name, (step, _) in runs.items():
            states[name], wall = timed_block(step, states[name], a.calls)
            walls[name] += wall
    rates = {name: a.blocks * a.calls / wall for name, wall in walls.items()}
    print(f"{spec.env_id} obs {spec.observation.shape}, MLP {tuple(a.hidden)}, batch {a.batch}, K {a.k}, "
          f"{jax.devices()[0].platform}, {a.blocks} x {a.calls} updates each")
    for name, rate in rates.items():
        print(f"{name:>10}: {rate:8.1f} updates/s (all {a.k} members)")
    print(f"ratio vmapped / sequential: {rates['vmapped'] / rates['sequential']:.2f}")


if __name__ == "__main__":
    main()
