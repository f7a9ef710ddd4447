"""TD3 end to end through the shared online runner on Pendulum-v1 (EnvPool, continuous actions): Gaussian
actors write sequences with their behaviour log-densities into Reverb, the learner trains on them, a run
checkpoints, resumes (learner state and the actors' warm-up counter) and evaluates the deterministic
policy; and `rillet train-online td3 --td3.estimator ...` on the command line."""

import json
import os

import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners.td3 import TD3Config
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.cli import main, online_config_type
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online

SMALL = TD3Config(estimator="retrace", hidden_sizes=(32, 32), trace_length=3, n_step=3, warmup_steps=400,
                  learning_rate=1e-3)
REPLAY = ReplayConfig(sequence_period=2, batch_size=16, min_size_to_sample=50, samples_per_insert=16.0)


def config_for(run_dir, total_env_steps, learner=SMALL):
    return OnlineConfig(agent="td3", env_id="Pendulum-v1", learner=learner, total_env_steps=total_env_steps,
                        eval_every_steps=600, eval_episodes=2, checkpoint_every_updates=100, progress=False,
                        run_dir=str(run_dir), replay=REPLAY, actor=ActorConfig(num_envs=4))


def test_td3_trains_checkpoints_resumes_and_evaluates(tmp_path):
    run = tmp_path / "run"
    first = train_online(config_for(run, 800))
    assert first["env_steps"] >= 800 and first["updates"] > 100
    assert np.isfinite(first["final_eval"]["return_mean"]) and first["final_eval"]["episodes"] == 2
    ckpt = Checkpointer(first["checkpoints"], config_for(run, 800).learner_fingerprint())
    assert ckpt.latest_step() == first["updates"]
    warmup_left = np.asarray(ckpt.restore_actor()["warmup_left"])
    ckpt.close()
    np.testing.assert_array_equal(warmup_left, 0)  # 400 warm-up steps over 4 envs, all spent
    second = train_online(config_for(run, 1_200))
    assert second["env_steps"] >= 1_200 and second["updates"] > first["updates"]
    learner = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if "learner/critic_loss" in r]
    assert learner and all(np.isfinite(r["learner/critic_loss"]) for r in learner)
    assert any(r["learner/actor_updated"] == 1.0 for r in learner)
    curve = read_jsonl(os.path.join(run, "curve.jsonl"))
    assert [c["env_steps"] for c in curve][-1] >= 1_200 and len(curve) >= 3
    assert os.path.getsize(second["learning_curve"]) > 0


def cli_args(run_dir, estimator):
    """`rillet train-online td3` with SMALL and REPLAY's options (so that the compiled update is shared)."""
    return ["train-online", "td3", "--env-id", "Pendulum-v1", "--total-env-steps", "400", "--eval-every-steps", "0",
            "--eval-episodes", "1", "--no-progress", "--run-dir", str(run_dir), "--actor.num-envs", "4",
            "--replay.sequence-period", "2", "--replay.batch-size", "16", "--replay.min-size-to-sample", "50",
            "--replay.samples-per-insert", "16", "--td3.estimator", estimator, "--td3.hidden-sizes", "32", "32",
            "--td3.trace-length", "3", "--td3.n-step", "3", "--td3.warmup-steps", "400", "--td3.learning-rate", "1e-3"]


def test_cli_trains_td3_with_an_estimator_and_rejects_bad_ones(tmp_path, capsys):
    run = tmp_path / "cli"
    assert main(cli_args(run, "retrace")) == 0
    with open(run / "config.json") as f:
        saved = json.load(f)
    assert saved["agent"] == "td3" and saved["learner"]["estimator"] == "retrace"
    assert saved["learner"]["hidden_sizes"] == [32, 32]
    assert main(cli_args(tmp_path / "bad", "watkins")) == 2
    assert "watkins" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="continuous"):
        train_online(OnlineConfig(agent="td3", env_id="CartPole-v1", learner=SMALL, run_dir=str(tmp_path / "discrete"),
                                  progress=False))


def test_the_command_line_starts_from_the_agents_replay_options():
    td3_run, dqn_run = online_config_type("td3")(), online_config_type("dqn")()
    assert td3_run.replay.sequence_period == td3_run.learner.trace_length == 5
    assert td3_run.replay.samples_per_insert == 5 * td3_run.replay.batch_size
    assert dqn_run.replay == ReplayConfig()
