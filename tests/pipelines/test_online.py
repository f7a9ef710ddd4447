"""The online runner end to end: EnvPool actor -> embedded Reverb -> DQN learner, on CartPole."""

import dataclasses
import json
import os

import pytest

from rillet.errors import CheckpointError, ConfigError, DivergenceError, EnvironmentIdError
from rillet.learners.dqn import DQNConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online


def small_config(run_dir, **kw) -> OnlineConfig:
    base = OnlineConfig(env_id="CartPole-v1", total_env_steps=3_000, eval_every_steps=0, eval_episodes=5,
                        checkpoint_every_updates=50, run_dir=str(run_dir), progress=False,
                        learner=DQNConfig(hidden_sizes=(64, 64)),
                        replay=ReplayConfig(min_size_to_sample=200, batch_size=32),
                        actor=ActorConfig(num_envs=4))
    return dataclasses.replace(base, **kw)


def test_cartpole_learns_within_ci_budget(tmp_path):
    """A bounded run must reach a mean greedy return >= 200 (the demo goes on to 475)."""
    config = dataclasses.replace(
        small_config(tmp_path / "run"), total_env_steps=60_000, eval_every_steps=5_000, eval_episodes=10,
        stop_at_return=200.0, learner=DQNConfig(), replay=ReplayConfig(), actor=ActorConfig(),
        checkpoint_every_updates=2_000)
    summary = train_online(config)
    assert summary["best_eval"]["return_mean"] >= 200.0, summary
    assert os.path.getsize(summary["learning_curve"]) > 1_000
    records = read_jsonl(summary["metrics"])
    assert any("learner/loss" in r for r in records) and any("eval/return_mean" in r for r in records)
    assert os.listdir(os.path.join(config.run_dir, "tb")), "TensorBoard event files are written"


def test_resume_continues_from_the_latest_checkpoint(tmp_path):
    first = train_online(small_config(tmp_path / "run", total_env_steps=1_000))  # hundreds of updates
    assert first["env_steps"] == 1_000 and first["updates"] > 0
    second = train_online(small_config(tmp_path / "run", total_env_steps=1_500))
    assert second["env_steps"] == 1_500
    assert second["updates"] > first["updates"], "update counter continues from the checkpoint"
    curve = read_jsonl(os.path.join(tmp_path / "run", "curve.jsonl"))
    assert [c["env_steps"] for c in curve] == [1_000, 1_500]


def test_a_resume_with_other_settings_is_refused_before_anything_is_written(tmp_path):
    """Another network, gamma or replay table: refused, naming what differs, with config.json and the
    checkpoints untouched; the budget may change (and the resume says so)."""
    train_online(small_config(tmp_path / "run", total_env_steps=500))
    saved = (tmp_path / "run" / "config.json").read_text()
    steps = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    for change, named in (({"learner": DQNConfig(hidden_sizes=(32,))}, "learner.hidden_sizes"),
                          ({"gamma": 0.9}, "gamma: 0.99 -> 0.9"),
                          ({"replay": ReplayConfig(min_size_to_sample=200, batch_size=64)}, "replay.batch_size")):
        with pytest.raises(CheckpointError, match=f"{named}.*Nothing was written"):
            train_online(small_config(tmp_path / "run", total_env_steps=1_000, **change))
        assert (tmp_path / "run" / "config.json").read_text() == saved
        assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == steps


def test_a_run_dir_that_cannot_hold_a_run_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, why in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "which is a file")):
        with pytest.raises(ConfigError, match=why):
            train_online(small_config(bad))


def test_a_diverged_learner_stops_before_checkpointing_nan(tmp_path):
    """A learner whose parameters become non-finite after 120 updates (DQN's update, then its online
    network's weights turned NaN: what an exploding update leaves) stops the run with DivergenceError;
    the checkpoint at update 50 and 100 stay, finite, and nothing later is saved."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from rillet.learners.agents import get_agent, register, unregister

    dqn_agent = get_agent("dqn")

    def exploding(state, batch, config):
        state, metrics = dqn_agent.update(state, batch, config)
        factor = jnp.where(state.steps >= 120, jnp.nan, 1.0)
        online = jax.tree.map(lambda x: x * factor if eqx.is_inexact_array(x) else x, state.online)
        return eqx.tree_at(lambda s: s.online, state, online), metrics

    register(dataclasses.replace(dqn_agent, name="dqn-exploding", update=exploding))
    try:
        config = dataclasses.replace(small_config(tmp_path / "run"), agent="dqn-exploding")
        with pytest.raises(DivergenceError, match="non-finite.*Lower the learning rate"):
            train_online(config)
    finally:
        unregister("dqn-exploding")
    kept = sorted(int(n) for n in os.listdir(tmp_path / "run" / "checkpoints") if n.isdigit())
    assert kept and max(kept) <= 100, kept


def test_an_existing_record_dir_is_refused_before_acting(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match="--record-dir .* already exists"):
        train_online(small_config(tmp_path / "run", record_dir=str(tmp_path / "data")))


def test_a_learning_rate_above_one_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        train_online(small_config(tmp_path / "run", learner=DQNConfig(learning_rate=1e30)))
    assert not (tmp_path / "run").exists()


def test_batches_with_nan_or_inf_are_skipped_and_counted():
    import numpy as np

    from rillet.pipelines.learning import skip_non_finite

    good = {"data": {"reward": np.ones(4, np.float32), "observation": np.zeros((4, 2), np.uint8)}}
    nan_reward = {"data": {"reward": np.array([1, np.nan, 0, 0], np.float32),
                           "observation": good["data"]["observation"]}}
    inf_obs = {"data": {"reward": np.ones(4, np.float32), "observation": np.full((4, 2), np.inf, np.float32)}}
    counts = []
    kept = list(skip_non_finite(lambda b: b["data"], counts.append)([good, nan_reward, good, inf_obs]))
    assert kept == [good, good] and counts == [1, 2]


@pytest.mark.parametrize("field, value, match", [
    ("total_env_steps", 0, "total-env-steps"),
    ("total_env_steps", 150, "no update would run"),  # 150 transitions < replay.min-size-to-sample 200
    ("gamma", 1.5, "gamma"),
    ("actor", ActorConfig(num_envs=4096), "steps per environment"),  # 3,000 steps: none for an n-step item
    ("stop_after_evals", 0, "stop-after-evals"),
    ("replay", ReplayConfig(n_step=0), "replay.n-step"),
    ("replay", ReplayConfig(min_size_to_sample=10, max_size=5), "replay.min-size-to-sample"),
    ("actor", ActorConfig(num_envs=0), "actor.num-envs"),
    ("learner", DQNConfig(learning_rate=-1.0), "learning_rate"),
])
def test_config_values_out_of_range(tmp_path, field, value, match):
    with pytest.raises(ConfigError, match=match):
        train_online(small_config(tmp_path / "run", **{field: value}))


def test_unknown_env_id(tmp_path):
    with pytest.raises(EnvironmentIdError, match="CartPole-v1"):
        train_online(small_config(tmp_path / "run", env_id="CartPole-v9"))


def test_config_is_recorded(tmp_path):
    config = small_config(tmp_path / "run", total_env_steps=500)
    train_online(config)
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["env_id"] == "CartPole-v1"


def test_stop_after_evals_needs_that_many_evaluations_in_a_row(tmp_path):
    """Any return clears a target of 1, so the run stops at its third periodic evaluation. (The rule
    counts evaluations, not learning: 4 samples per insert, an eighth of small_config's updates.)"""
    config = small_config(tmp_path / "run", total_env_steps=20_000, eval_every_steps=500, eval_episodes=2,
                          stop_at_return=1.0, stop_after_evals=3,
                          replay=ReplayConfig(min_size_to_sample=200, batch_size=32, samples_per_insert=4.0))
    summary = train_online(config)
    curve = read_jsonl(os.path.join(tmp_path / "run", "curve.jsonl"))
    assert len(curve) == 4, curve  # three periodic evaluations, then the final one
    assert 1_500 <= curve[2]["env_steps"] < 2_500 and summary["env_steps"] < 5_000
