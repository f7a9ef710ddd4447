"""NGU's acting cost: actor steps/s (EnvPool steps + policy, through the real actor loop) of NGU's actor
(embedding, RND and the episodic k-NN reward over memories kept full at `--capacity` embeddings) against
R2D2's actor on the same environments with the same Q-network. Chunks alternate (R2D2, NGU, R2D2, ...)
in one process after a compiled warm-up; prints each pair, the episodic memory per environment, the
bound an exact k-NN puts on the ratio (one jitted pass that only reads the full memories, timed here,
added to R2D2's tick), and, last, the median ratio NGU / R2D2 (target >= 0.75 on CPU).

    .venv/bin/python benchmarks/ngu_actor.py                           # DoorKey-8x8, 16 envs, 30,000 memory
    .venv/bin/python benchmarks/ngu_actor.py --env Pong-v5 --envs 4 --ticks 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import equinox as eqx
import jax
import numpy as np

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.learners.agents import get_agent
from rillet.learners.ngu import NGUConfig
from rillet.learners.r2d2 import R2D2Config


def full_memory(memory, seed: int):
    """`memory` with every slot held: random embeddings, size = capacity (a memory at its limit)."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=memory.embeddings.shape).astype(np.float32)
    size = np.full(memory.size.shape, memory.capacity, np.int32)
    return eqx.tree_at(lambda m: (m.embeddings, m.size, m.dist_count, m.dist_mean), memory,
                       (jax.numpy.asarray(embeddings), jax.numpy.asarray(size),
                        jax.numpy.ones_like(memory.dist_count), jax.numpy.ones_like(memory.dist_mean)))


def actor_ticks(name: str, config, env_id: str, num_envs: int, ticks: int, seed: int = 0):
    """A generator of chunk timings: each next() runs `ticks` actor ticks and returns env steps/s."""
    env = BatchedEnv(env_id, num_envs, seed=seed)
    agent = get_agent(name)
    spec = agent.spec(env.spec, config)
    params = agent.network(agent.init(jax.random.PRNGKey(seed), spec, config))
    exploration = {"epsilon": np.full(num_envs, 0.01, np.float32), "policy_index": np.arange(num_envs) % 32}
    parts = agent.actor(spec, config, num_envs, exploration)
    calls = 0

    def policy(p, obs, state, key):  # after the first tick's episode starts, the memories are full
        nonlocal calls
        calls += 1
        action, extras, state = parts.policy(p, obs, state, key)
        if calls == 1 and "memory" in state:
            state = {**state, "memory": full_memory(state["memory"], seed)}
        return action, extras, state

    loop = envpool_actor(env, policy, lambda: params, parts.actor_state, seed=seed, observe=parts.observe)
    for _ in range(ticks):  # warm-up: compilation
        next(loop)
    while True:
        t0 = time.perf_counter()
        for _ in range(ticks):
            step = next(loop)
        jax.block_until_ready(step["action"])
        yield ticks * num_envs / (time.perf_counter() - t0)


def memory_read_ms(num_envs: int, capacity: int, dim: int, repeats: int = 30) -> float:
    """Milliseconds of one jitted pass reading B x (capacity + 1) x D float32 once (a sum): the least
    an exact k-NN over full memories reads each tick."""
    memories = jax.numpy.ones((num_envs, capacity + 1, dim), jax.numpy.float32)
    read = jax.jit(lambda m: jax.numpy.sum(m, axis=(1, 2)))
    read(memories).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        read(memories).block_until_ready()
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="MiniGrid-DoorKey-8x8-v0")
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--ticks", type=int, default=100)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--capacity", type=int, default=30_000)
    args = p.parse_args()
    r2d2_config = R2D2Config()
    ngu_config = NGUConfig(memory_capacity=args.capacity)
    r2d2_chunks = actor_ticks("r2d2", r2d2_config, args.env, args.envs, args.ticks)
    ngu_chunks = actor_ticks("ngu", ngu_config, args.env, args.envs, args.ticks)
    ratios, bases = [], []
    for i in range(args.pairs):
        base, ngu = next(r2d2_chunks), next(ngu_chunks)
        ratios.append(ngu / base)
        bases.append(base)
        print(f"pair {i}: r2d2 {base:.0f} steps/s, ngu {ngu:.0f} steps/s, ratio {ngu / base:.3f}", flush=True)
    per_env = ((args.capacity + 1) * ngu_config.embedding_size * 4 + 16) / 2**20
    print(f"{args.env}, {args.envs} envs, lstm {ngu_config.lstm_size}, memory {args.capacity} x "
          f"{ngu_config.embedding_size}: episodic memory {per_env:.2f} MiB per environment")
    tick_ms = 1e3 * args.envs / statistics.median(bases)
    read_ms = memory_read_ms(args.envs, args.capacity, ngu_config.embedding_size)
    print(f"bound of an exact k-NN: r2d2 tick {tick_ms:.2f} ms, reading the {args.envs} full memories once "
          f"{read_ms:.2f} ms -> ratio at most {tick_ms / (tick_ms + read_ms):.3f}")
    print(f"ngu_actor ratio (ngu / r2d2 steps/s, median of {args.pairs}): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
