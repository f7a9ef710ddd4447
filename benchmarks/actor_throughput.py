"""Actor throughput (issue 22 part 4): the actor pipeline (EnvPool -> jitted epsilon-greedy Q-network
policy -> Reverb n-step writes) against what its three parts imply, each timed alone in this process on
the same env, observations and items:

    env alone       EnvPool stepping with random actions            -> e steps/s
    policy alone    the jitted policy on the same observations      -> p steps/s
    writes alone    the Reverb writer on the same batched steps     -> w steps/s
    implied         1 / (1/e + 1/p + 1/w): the three run one after the other per tick

    .venv/bin/python benchmarks/actor_throughput.py --env-id Pong-v5 --num-envs 8

Prints steps/s for each, the pipeline's, and last the ratio pipeline / implied (target >= 0.9: what
the loop itself costs on top of its parts). Also the old figure, pipeline / raw EnvPool.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.exploration import apex_epsilons
from rillet.actors.policies import epsilon_greedy, random_policy
from rillet.datasets import reverb_tables
from rillet.datasets.reverb_writer import NStepTransitionWriter, reverb_writer
from rillet.learners import dqn
from rillet.pipelines.stages import Stream, run, take


def raw_envpool(env_id: str, num_envs: int, num_threads: int, ticks: int, seed: int) -> float:
    """Steps/s of EnvPool alone with uniform random actions."""
    env = BatchedEnv(env_id, num_envs, seed=seed, num_threads=num_threads)
    rng = np.random.default_rng(seed)
    env.reset()
    actions = rng.integers(0, env.spec.num_actions, size=(ticks, num_envs), dtype=np.int32)
    start = time.perf_counter()
    for t in range(ticks):
        env.step(actions[t])
    return ticks * num_envs / (time.perf_counter() - start)


def actor_pipeline(env_id: str, num_envs: int, num_threads: int, ticks: int, seed: int,
                   network_policy: bool = True) -> float:
    """Steps/s of envpool_actor writing n-step transitions to Reverb, with the DQN network's
    epsilon-greedy policy (or, network_policy=False, a jitted uniform-random policy: the cost of
    the loop and the writes alone)."""
    env = BatchedEnv(env_id, num_envs, seed=seed, num_threads=num_threads)
    spec = env.spec
    state = dqn.init(jax.random.PRNGKey(seed), spec, dqn.DQNConfig())
    table = reverb_tables.make_table("bench", reverb_tables.transition_signature(spec),
                                     max_size=50_000, min_size_to_sample=1)
    server = reverb_tables.make_server([table])
    writer = NStepTransitionWriter(f"127.0.0.1:{server.port}", "bench", spec, n=3, gamma=0.99)
    policy = epsilon_greedy(dqn.q_values) if network_policy else random_policy(spec.num_actions)
    actor_state = {"epsilon": apex_epsilons(num_envs)}
    stream = Stream(envpool_actor(env, policy, lambda: state.online, actor_state, seed=seed)) | reverb_writer(writer)
    run(stream | take(20))  # compile the policy, open the writers
    start = time.perf_counter()
    run(stream | take(ticks))
    writer.flush()
    elapsed = time.perf_counter() - start
    writer.close()
    server.stop()
    return ticks * num_envs / elapsed


def parts_alone(env_id: str, num_envs: int, num_threads: int, ticks: int, seed: int) -> tuple[float, float]:
    """(policy alone, writes alone) in steps/s: the DQN epsilon-greedy policy on `ticks` recorded batches of
    observations, and the n-step Reverb writer on the same recorded batched steps."""
    env = BatchedEnv(env_id, num_envs, seed=seed, num_threads=num_threads)
    spec = env.spec
    recorded = list(Stream(envpool_actor(env, random_policy(spec.num_actions), lambda: None, {}, seed=seed))
                    | take(ticks + 20))
    state = dqn.init(jax.random.PRNGKey(seed), spec, dqn.DQNConfig())
    policy, actor_state = epsilon_greedy(dqn.q_values), {"epsilon": apex_epsilons(num_envs)}
    keys = jax.random.split(jax.random.PRNGKey(seed), ticks + 20)
    for t in range(20):  # compile
        np.asarray(policy(state.online, recorded[t]["observation"], actor_state, keys[t])[0])
    start = time.perf_counter()
    for t in range(20, ticks + 20):
        np.asarray(policy(state.online, recorded[t]["observation"], actor_state, keys[t])[0])
    policy_rate = ticks * num_envs / (time.perf_counter() - start)
    table = reverb_tables.make_table("bench", reverb_tables.transition_signature(spec), max_size=50_000,
                                     min_size_to_sample=1)
    server = reverb_tables.make_server([table])
    writer = NStepTransitionWriter(f"127.0.0.1:{server.port}", "bench", spec, n=3, gamma=0.99)
    for step in recorded[:20]:
        writer.write(step)
    start = time.perf_counter()
    for step in recorded[20:]:
        writer.write(step)
    writer.flush()
    write_rate = ticks * num_envs / (time.perf_counter() - start)
    writer.close()
    server.stop()
    env.close()
    return policy_rate, write_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--env-id", default="Pong-v5")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument("--ticks", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    raw_envpool(a.env_id, a.num_envs, a.num_threads, 20, a.seed)  # warm up
    raw = raw_envpool(a.env_id, a.num_envs, a.num_threads, a.ticks, a.seed)
    loop_and_writes = actor_pipeline(a.env_id, a.num_envs, a.num_threads, a.ticks, a.seed, network_policy=False)
    pipe = actor_pipeline(a.env_id, a.num_envs, a.num_threads, a.ticks, a.seed)
    policy_rate, write_rate = parts_alone(a.env_id, a.num_envs, a.num_threads, a.ticks, a.seed)
    implied = 1.0 / (1.0 / raw + 1.0 / policy_rate + 1.0 / write_rate)
    print(f"device: {jax.devices()[0].platform}, env: {a.env_id}, envs: {a.num_envs}, threads: {a.num_threads}")
    print(f"policy alone (jitted Q-network, recorded observations): {policy_rate:,.0f} steps/s")
    print(f"Reverb n-step writes alone (recorded steps): {write_rate:,.0f} steps/s")
    print(f"implied by env + policy + writes in series: {implied:,.0f} steps/s")
    print(f"raw EnvPool random actions: {raw:,.0f} steps/s")
    print(f"actor loop + Reverb writes, jitted random policy: {loop_and_writes:,.0f} steps/s "
          f"(ratio {loop_and_writes / raw:.3f})")
    print(f"actor pipeline (jitted Q-network policy + Reverb writes): {pipe:,.0f} steps/s")
    print(f"ratio pipeline/raw: {pipe / raw:.3f}")
    print(f"ratio pipeline/implied: {pipe / implied:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
