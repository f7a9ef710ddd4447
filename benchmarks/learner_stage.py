"""The learner stage's overhead: updates/s of the runner's learner tail (learn -> parameter hand-off ->
metrics every 100 updates -> checkpoint and evaluation schedules, composed with `|` as `train_online`
composes them) over fixed batches, against calling `update` in a bare loop on the same batches, for
DQN and R2D2 on CPU. Runs alternate (bare, stage, bare, stage, ...) in one process; compilation is
excluded. Prints each pair's updates/s and, last, the median ratio stage / bare (target >= 0.97).

    .venv/bin/python benchmarks/learner_stage.py                     # DQN and R2D2, 5 pairs of 300 updates
    .venv/bin/python benchmarks/learner_stage.py --agents dqn --updates 1000 --pairs 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import dqn, r2d2
from rillet.learners.agents import get_agent
from rillet.pipelines.acting import LatestParams
from rillet.pipelines.learning import learn, log_metrics
from rillet.pipelines.metrics import MetricsWriter
from rillet.pipelines.stages import Stream, every, last, tap

SPEC = StepSpec(ArraySpec((4,), "float32"), ArraySpec((), "int32"), num_actions=2, env_id="CartPole-like")
R2D2_CONFIG = r2d2.R2D2Config(burn_in=10, trace_length=20, lstm_size=128, hidden_sizes=(128,), gamma=0.99)


def dqn_batches(rng, count: int) -> list[dict]:
    """`count` batches of 128 one-step CartPole-shaped transitions."""
    return [{"observation": rng.normal(size=(128, 4)).astype(np.float32),
             "action": rng.integers(0, 2, 128).astype(np.int32), "reward": np.ones(128, np.float32),
             "discount": np.full(128, 0.99, np.float32),
             "next_observation": rng.normal(size=(128, 4)).astype(np.float32)} for _ in range(count)]


def r2d2_batches(rng, count: int) -> list[dict]:
    """`count` batches of 32 sequences of 10 + 20 + 1 steps with every field R2D2 reads."""
    B, L, H = 32, R2D2_CONFIG.sequence_length, R2D2_CONFIG.lstm_size
    out = []
    for _ in range(count):
        action = rng.integers(0, 2, (B, L)).astype(np.int32)
        reward = np.ones((B, L), np.float32)
        flags = np.zeros((B, L), bool)
        out.append({"observation": rng.normal(size=(B, L, 4)).astype(np.float32), "action": action,
                    "reward": reward, "discount": np.ones((B, L), np.float32), "is_first": flags,
                    "is_last": flags, "is_terminal": flags, "mask": ~flags, "weights": np.ones(B, np.float32),
                    "extras": {"recurrent_state_h": np.zeros((B, L, H), np.float32),
                               "recurrent_state_c": np.zeros((B, L, H), np.float32),
                               "behaviour_prob": np.full((B, L), 0.9, np.float32),
                               "prev_action": np.roll(action, 1, 1), "prev_reward": np.roll(reward, 1, 1)}})
    return out


def bare(update, state, config, batches, updates: int) -> float:
    """Updates/s of `update` called in a plain loop."""
    t0 = time.perf_counter()
    for i in range(updates):
        state, metrics = update(state, batches[i % len(batches)], config)
    jax.block_until_ready((state, metrics))
    return updates / (time.perf_counter() - t0)


def staged(agent, state, config, batches, updates: int, writer: MetricsWriter) -> float:
    """Updates/s of the same updates through the runner's learner tail (as `train_online` composes it)."""
    params = LatestParams(agent.network(state))
    source = (batches[i % len(batches)] for i in range(updates))
    t0 = time.perf_counter()
    tick = last(Stream(source)
                | learn(agent.update, state, config)
                | tap(lambda t: params.set(agent.network(t.state)))
                | every(100, log_metrics(writer, "learner/"))
                | every(2_000, lambda t: None)
                | every(10_000, lambda t: None, count=lambda t: 4 * t.step))
    jax.block_until_ready((tick.state, tick.metrics))
    return updates / (time.perf_counter() - t0)


def measure(name: str, updates: int, pairs: int) -> float:
    agent = get_agent(name)
    rng = np.random.default_rng(0)
    config, batches = ((dqn.DQNConfig(), dqn_batches(rng, 16)) if name == "dqn" else
                       (R2D2_CONFIG, r2d2_batches(rng, 4)))
    state = agent.init(jax.random.PRNGKey(0), agent.spec(SPEC, config), config)
    for b in batches[:2]:  # compile
        jax.block_until_ready(agent.update(state, b, config))
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = MetricsWriter(tmp)
        for pair in range(pairs):
            base = bare(agent.update, state, config, batches, updates)
            stage = staged(agent, state, config, batches, updates, writer)
            ratios.append(stage / base)
            print(f"{name} pair {pair}: bare {base:8.1f} updates/s, learner stage {stage:8.1f} updates/s, "
                  f"ratio {stage / base:.3f}", flush=True)
        writer.close()
    return statistics.median(ratios)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="+", default=["dqn", "r2d2"])
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--pairs", type=int, default=5)
    a = p.parse_args()
    print(f"device: {jax.devices()[0].platform}")
    medians = {name: measure(name, a.updates, a.pairs) for name in a.agents}
    for name, ratio in medians.items():
        print(f"{name}: median ratio learner stage / bare loop over {a.pairs} pairs: {ratio:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
