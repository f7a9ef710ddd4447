"""DQN, R2D2 and PAC updates on fixed batches equal the figures recorded before the agent core was
recomposed (issue 12): `golden_updates.json` holds, per JAX version (each JAX line draws its own PRNG
bits, so its own initial parameters), the figures of commit d79d815 (R2D2 as one fixed recipe, before
the shared recurrent core, sequence targets and multi-group step), recorded by running this file as a
script with that commit's rillet on the path (see the bottom). Same seeds, same batches, three updates
each: losses, gradient norms, priorities and a checksum of every state array must agree."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import dqn, pac, r2d2

GOLDEN = os.path.join(os.path.dirname(__file__), "golden_updates.json")
SPEC = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=3, env_id="CartPole-like")
PAC_SPEC = StepSpec(ArraySpec((5,), "float32"), ArraySpec((2,), "float32"), env_id="continuous")
R2D2_CFG = r2d2.R2D2Config(burn_in=3, trace_length=6, n_step=3, lstm_size=16, hidden_sizes=(16,),
                           learning_rate=3e-3, adam_eps=1e-8, target_update_period=2, gamma=0.9)
B = 4


def dqn_batch(rng) -> dict:
    return {"observation": rng.normal(size=(8, 4)).astype(np.float32),
            "action": rng.integers(0, 3, 8).astype(np.int32), "reward": rng.normal(size=8).astype(np.float32),
            "discount": (0.99 * (rng.uniform(size=8) > 0.2)).astype(np.float32),
            "next_observation": rng.normal(size=(8, 4)).astype(np.float32),
            "weights": rng.uniform(0.3, 1.0, 8).astype(np.float32)}


def r2d2_batch(rng) -> dict:
    """B sequences of burn_in + trace + 1 steps; sequence 1 starts an episode at step 2, sequence 2 ends
    (terminal) at step 5 and is padded after it, sequence 3 is truncated at step 8."""
    L, H = R2D2_CFG.sequence_length, R2D2_CFG.lstm_size
    action = rng.integers(0, 3, (B, L)).astype(np.int32)
    reward = rng.normal(size=(B, L)).astype(np.float32)
    batch = {"observation": rng.normal(size=(B, L, 4)).astype(np.float32), "action": action, "reward": reward,
             "discount": np.ones((B, L), np.float32), "is_first": np.zeros((B, L), bool),
             "is_last": np.zeros((B, L), bool), "is_terminal": np.zeros((B, L), bool),
             "mask": np.ones((B, L), bool), "weights": rng.uniform(0.3, 1.0, B).astype(np.float32),
             "extras": {"recurrent_state_h": 0.3 * rng.normal(size=(B, L, H)).astype(np.float32),
                        "recurrent_state_c": 0.3 * rng.normal(size=(B, L, H)).astype(np.float32),
                        "behaviour_prob": rng.uniform(0.2, 1.0, (B, L)).astype(np.float32),
                        "prev_action": np.concatenate([np.zeros((B, 1), np.int32), action[:, :-1]], 1),
                        "prev_reward": np.concatenate([np.zeros((B, 1), np.float32), reward[:, :-1]], 1)}}
    batch["is_first"][1, 2] = True
    batch["is_last"][2, 5] = batch["is_terminal"][2, 5] = True
    batch["discount"][2, 4] = 0.0
    batch["mask"][2, 6:] = False
    batch["is_last"][3, 8] = True
    return batch


def pac_batch(rng) -> dict:
    return {"observation": rng.normal(size=(8, 5)).astype(np.float32),
            "next_observation": rng.normal(size=(8, 5)).astype(np.float32),
            "action": rng.uniform(-1, 1, (8, 2)).astype(np.float32), "reward": rng.uniform(size=8).astype(np.float32),
            "discount": np.full(8, 0.99, np.float32), "task_id": np.zeros(8, np.int32)}


CASES = {  # name: (learner module, init seed, config, batch maker, spec)
    "dqn": (dqn, 1, dqn.DQNConfig(hidden_sizes=(16, 16), target_update_period=2), dqn_batch, SPEC),
    "dqn_dueling_polyak": (dqn, 2, dqn.DQNConfig(hidden_sizes=(16,), dueling=True, target_polyak_tau=0.1,
                                                 double_q=False), dqn_batch, SPEC),
    "r2d2_nstep": (r2d2, 3, R2D2_CFG, r2d2_batch, SPEC),
    "r2d2_retrace": (r2d2, 4, dataclasses.replace(R2D2_CFG, estimator="retrace", target_epsilon=0.1,
                                                  max_grad_norm=None), r2d2_batch, SPEC),
    "pac": (pac, 5, pac.PACConfig(network="test"), pac_batch, PAC_SPEC),
}
METRICS = ("loss", "grad_norm", "mean_q", "priorities", "critic_loss", "policy_loss", "temperature")


def run_case(name: str) -> dict:
    """Three updates on three fixed batches: the metrics of each and a checksum of the final state."""
    learner, seed, config, make_batch, spec = CASES[name]
    state, rng, out = learner.init(jax.random.PRNGKey(seed), spec, config), np.random.default_rng(7), {"metrics": []}
    for _ in range(3):
        state, m = learner.update(state, make_batch(rng), config)
        out["metrics"].append({k: np.asarray(m[k], np.float64).tolist() for k in METRICS if k in m})
    arrays = jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))
    out["state_sums"] = sorted(float(np.sum(np.asarray(x, np.float64))) for x in arrays)
    out["state_abs_sums"] = sorted(float(np.sum(np.abs(np.asarray(x, np.float64)))) for x in arrays)
    return out


def recorded() -> dict:
    """{JAX version: {"commit": ..., "cases": {name: figures}}}."""
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.mark.skipif(jax.__version__ not in recorded(),
                    reason=f"no figures recorded for JAX {jax.__version__} (recorded: {sorted(recorded())}); "
                           "record them from d79d815 as the bottom of this file says")
@pytest.mark.parametrize("name", sorted(CASES))
def test_update_equals_the_recorded_one(name):
    want = recorded()[jax.__version__]["cases"][name]
    got = run_case(name)
    for step, (g, w) in enumerate(zip(got["metrics"], want["metrics"])):
        assert set(w) <= set(g), (name, step)  # new metrics may be added, none may go
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=2e-5, atol=1e-6, err_msg=f"{name} update {step} {k}")
    # Sorted checksums: the state's leaves may be laid out differently, their values may not.
    np.testing.assert_allclose(got["state_sums"], want["state_sums"], rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(got["state_abs_sums"], want["state_abs_sums"], rtol=2e-5, atol=1e-5)


if __name__ == "__main__":
    # Records this JAX's figures into golden_updates.json, from the reference commit only, e.g. with a
    # worktree of d79d815 linked as <dir>/rillet:  PYTHONPATH=<dir> python tests/learners/test_unchanged_updates.py d79d815
    figures = recorded()
    figures[jax.__version__] = {"commit": sys.argv[1], "cases": {name: run_case(name) for name in sorted(CASES)}}
    with open(GOLDEN, "w") as f:
        json.dump(figures, f, indent=1)
