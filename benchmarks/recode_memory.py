"""What RECODE's cluster memory costs an actor: embeddings/s through lookup + update of the shared
cluster memory (`actors/cluster_memory.py`, full at --atoms atoms, --batch embeddings per jitted call),
against NGU's episodic memory (`actors/episodic_novelty.py`, --batch environments with full memories
of --capacity embeddings, one embedding each per call), same D, in one process. The two are timed in
alternating blocks so that the machine's drift hits both alike; compilation excluded. Embeddings are
fresh random vectors each call (pre-drawn on the device), so the cluster memory inserts, merges and
replaces as it would on a new stream.

    .venv/bin/python benchmarks/recode_memory.py                 # 50,000 atoms vs 30,000 per env, D 32, B 16
    .venv/bin/python benchmarks/recode_memory.py --atoms 200000  # a larger shared memory

Prints embeddings/s of each (wall clock and process CPU time), and last the ratio RECODE / NGU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.actors.cluster_memory import ClusterConfig, cluster_reward, init_cluster_memory
from rillet.actors.episodic_novelty import EpisodicConfig, episodic_reward, init_memory


def full_cluster_memory(config: ClusterConfig, dim: int, seed: int):
    """A cluster memory with every slot in use: random atoms, counts uniform in [1, 100)."""
    rng = np.random.default_rng(seed)
    state = init_cluster_memory(config, dim, seed)
    return dataclasses.replace(state, atoms=jnp.asarray(rng.normal(size=state.atoms.shape), jnp.float32),
                               counts=jnp.asarray(rng.uniform(1, 100, size=config.capacity), jnp.float32),
                               size=jnp.asarray(config.capacity, jnp.int32))


def full_episodic_memory(num_envs: int, capacity: int, dim: int, seed: int):
    """NGU's memories with every slot held (random embeddings) and a running mean d_m^2 of 1."""
    rng = np.random.default_rng(seed)
    memory = init_memory(num_envs, capacity, dim)
    return eqx.tree_at(lambda m: (m.embeddings, m.size, m.dist_count, m.dist_mean), memory,
                       (jnp.asarray(rng.normal(size=memory.embeddings.shape), jnp.float32),
                        jnp.full(num_envs, capacity, jnp.int32), jnp.ones(num_envs), jnp.ones(num_envs)))


def timed_block(step, state, embeddings):
    """(state, wall seconds, CPU seconds) of one call per row of embeddings [calls, B, D]."""
    wall, cpu = time.perf_counter(), time.process_time()
    for e in embeddings:
        reward, state = step(state, e)
    jax.block_until_ready((reward, state))
    return state, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=ClusterConfig.capacity, help="the cluster memory's atoms")
    p.add_argument("--capacity", type=int, default=EpisodicConfig.capacity, help="NGU's memory per environment")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--batch", type=int, default=16, help="embeddings per call (NGU: environments)")
    p.add_argument("--calls", type=int, default=20, help="calls per timed block")
    p.add_argument("--blocks", type=int, default=5, help="alternating timed blocks per memory")
    a = p.parse_args()
    cluster_config = ClusterConfig(capacity=a.atoms).validate()
    episodic_config = EpisodicConfig(capacity=a.capacity).validate()
    draws = jax.random.normal(jax.random.PRNGKey(1), (a.blocks + 1, a.calls, a.batch, a.dim))
    runs = {
        "RECODE": {"state": full_cluster_memory(cluster_config, a.dim, 0),
                   "step": lambda s, e: cluster_reward(s, e, cluster_config)},
        "NGU": {"state": full_episodic_memory(a.batch, a.capacity, a.dim, 0),
                "step": lambda s, e: episodic_reward(s, e, episodic_config)},
    }
    for name, run in runs.items():  # block 0: compilation and warm-up
        run["state"], wall, _ = timed_block(run["step"], run["state"], draws[0])
        run["wall"] = run["cpu"] = 0.0
        print(f"{name}: compile + {a.calls} calls {wall:.1f} s", flush=True)
    for block in range(1, a.blocks + 1):
        for run in runs.values():
            run["state"], wall, cpu = timed_block(run["step"], run["state"], draws[block])
            run["wall"] += wall
            run["cpu"] += cpu
    embeddings = a.blocks * a.calls * a.batch
    print(f"device {jax.devices()[0].platform}; D {a.dim}; {a.batch} embeddings per call; RECODE {a.atoms} atoms "
          f"(size {int(runs['RECODE']['state'].size)}, {int(runs['RECODE']['state'].steps)} embeddings seen); "
          f"NGU {a.batch} envs x {a.capacity} embeddings")
    for name, run in runs.items():
        print(f"{name}: {embeddings / run['wall']:.0f} embeddings/s (wall), {embeddings / run['cpu']:.0f} per CPU second")
    wall = runs["NGU"]["wall"] / runs["RECODE"]["wall"]
    cpu = runs["NGU"]["cpu"] / runs["RECODE"]["cpu"]
    print(f"ratio RECODE / NGU embeddings/s: {wall:.3f} (wall), {cpu:.3f} (CPU time)")


if __name__ == "__main__":
    main()
