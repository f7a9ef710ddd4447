"""R2D2 end to end: recurrent actors (state carried per env, reset at EnvPool auto-resets) write
stored-state sequences into Reverb; the sequences' boundaries, masks, extras and stored states
are checked against a replay of the network over each raw episode."""

import dataclasses

import jax
import numpy as np
import reverb
from hypothesis import given, settings, strategies as st

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.exploration import apex_epsilons
from rillet.datasets import reverb_sampler
from rillet.datasets.replay_stage import item_signature, replay_writer
from rillet.learners.agents import get_agent
from rillet.learners.r2d2 import R2D2Config
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online

SMALL = R2D2Config(burn_in=2, trace_length=4, lstm_size=8, hidden_sizes=(8,), gamma=0.99,
                   learning_rate=1e-3, target_update_period=50)


def config_for(tmp_path, **kw):
    return OnlineConfig(agent="r2d2", env_id="CartPole-v1", observation_indices=(0, 2), total_env_steps=1_000,
                        eval_every_steps=0, eval_episodes=3, progress=False, run_dir=str(tmp_path / "run"),
                        learner=SMALL, checkpoint_every_updates=20,
                        replay=ReplayConfig(sampler="prioritized", priority_exponent=0.9, sequence_period=3,
                                            batch_size=8, min_size_to_sample=20, samples_per_insert=4.0),
                        actor=ActorConfig(num_envs=3), **kw)


@settings(max_examples=5, deadline=None)
@given(num_envs=st.integers(1, 4), limit=st.integers(3, 12), period=st.integers(1, 4), seed=st.integers(0, 99))
def test_sequences_carry_correct_boundaries_masks_and_states(tmp_path_factory, num_envs, limit, period, seed):
    config = dataclasses.replace(config_for(tmp_path_factory.mktemp("r")), seed=seed,
                                 replay=dataclasses.replace(config_for(tmp_path_factory.mktemp("r")).replay,
                                                            sequence_period=period))
    agent = get_agent("r2d2")
    env = BatchedEnv("CartPole-v1", num_envs, seed=seed, max_episode_steps=limit, observation_indices=(0, 2))
    spec = agent.spec(env.spec, config.learner)
    network = agent.network(agent.init(jax.random.PRNGKey(seed), spec, config.learner))
    item = agent.replay_item(config.learner)
    server = reverb.Server([reverb.Table.queue("seq", 100_000, signature=item_signature(item, spec))])
    address = f"127.0.0.1:{server.port}"
    parts = agent.actor(spec, config.learner, num_envs, {"epsilon": apex_epsilons(num_envs)})
    steps = list(envpool_actor(env, parts.policy, lambda: network, parts.actor_state, seed=seed,
                               observe=parts.observe, max_ticks=3 * limit + 5))
    with replay_writer(item, address, "seq", spec, config.replay, config.gamma) as writer:
        for s in steps:
            writer.write(s)
    count = writer.items_written
    assert count > 0
    items = next(reverb_sampler.sample_batches(address, "seq", count, num_workers_per_iterator=1,
                                               rate_limiter_timeout_ms=1_000))["data"]
    server.stop()
    # prev_action / prev_reward at each observation: a_{t-1} and r_{t-1} of that env's episode, 0 at
    # is_first (a set per observation, in case two steps share one)
    expected_prev = {}
    for k, s in enumerate(steps):
        for e in range(num_envs):
            prev = (0, 0.0) if s["is_first"][e] else (int(steps[k - 1]["action"][e]), float(steps[k - 1]["reward"][e]))
            expected_prev.setdefault(s["observation"][e].astype(spec.observation.np_dtype).tobytes(), set()).add(prev)

    for j in range(count):
        mask = items["mask"][j]
        real = int(mask.sum())
        assert mask[:real].all() and not mask[real:].any(), "padding only at the tail"
        assert not items["is_first"][j][1:real].any(), "a sequence never crosses into another episode"
        assert (items["observation"][j][real:] == 0).all()
        # Replay the network from the stored state: it must reproduce the next stored states.
        h, c = items["extras"]["recurrent_state_h"][j], items["extras"]["recurrent_state_c"][j]
        core = (h[:1], c[:1])
        for t in range(real - 1):
            prev_a, prev_r = items["extras"]["prev_action"][j][t], items["extras"]["prev_reward"][j][t]
            assert (int(prev_a), float(prev_r)) in expected_prev[items["observation"][j][t].tobytes()], (
                "prev_action/prev_reward are the episode's a_{t-1}, r_{t-1} (0 at is_first), also at a "
                "sequence's first step")
            inputs = {"prev_action": np.array([prev_a]), "prev_reward": np.array([prev_r])}
            _, _, core = network.step(items["observation"][j][t:t + 1], inputs, items["is_first"][j][t:t + 1], core)
            np.testing.assert_allclose(np.asarray(core[0])[0], h[t + 1], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np.asarray(core[1])[0], c[t + 1], rtol=1e-5, atol=1e-5)
        probs = items["extras"]["behaviour_prob"][j][:real - 1]
        assert ((probs > 0) & (probs <= 1)).all()


def test_train_online_r2d2_runs_with_checkpoints_and_priorities(tmp_path):
    summary = train_online(config_for(tmp_path))  # 1,000 env steps: over a hundred updates
    assert summary["updates"] > 20 and 1_000 <= summary["env_steps"] < 1_000 + 3
    records = read_jsonl(summary["metrics"])
    assert any("learner/loss" in r for r in records)
    assert summary["final_eval"]["episodes"] == 3
    resumed = train_online(dataclasses.replace(config_for(tmp_path), total_env_steps=1_500))
    assert resumed["updates"] > summary["updates"] and 1_500 <= resumed["env_steps"] < 1_500 + 3
