"""HiMo end to end on CartPole without velocities: actors act on q_m, Reverb holds sequences of HiMo's length
(burn-in + trace + n + k), the learner reports each loss term and the model error; checkpoint and resume."""

import dataclasses

from rillet.learners.himo import HiMoConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online

SMALL = HiMoConfig(burn_in=2, trace_length=4, n_step=2, lookahead=2, lstm_size=8, hidden_sizes=(8,),
                   hindsight_hidden=8, gamma=0.99, learning_rate=1e-3, target_update_period=50)


def config_for(tmp_path, total_env_steps=400):
    return OnlineConfig(agent="himo", env_id="CartPole-v1", observation_indices=(0, 2), total_env_steps=total_env_steps,
                        eval_every_steps=0, eval_episodes=2, progress=False, run_dir=str(tmp_path / "run"),
                        learner=SMALL, checkpoint_every_updates=20,
                        replay=ReplayConfig(sampler="prioritized", priority_exponent=0.9, sequence_period=3,
                                            batch_size=8, min_size_to_sample=20, samples_per_insert=8.0),
                        actor=ActorConfig(num_envs=2))


def test_train_online_himo_resumes_and_reports_its_losses(tmp_path):
    summary = train_online(config_for(tmp_path))
    assert summary["updates"] > 100 and 400 <= summary["env_steps"] < 400 + 2
    assert summary["final_eval"]["episodes"] == 2
    learner = [r for r in read_jsonl(summary["metrics"]) if "learner/loss" in r]
    names = ("q_loss", "hindsight_loss", "model_loss", "model_error", "mean_q", "grad_norm")
    assert learner and all(f"learner/{name}" in learner[-1] for name in names)
    assert learner[-1]["learner/hindsight_steps"] > 0
    resumed = train_online(config_for(tmp_path, total_env_steps=600))
    assert resumed["updates"] > summary["updates"] and 600 <= resumed["env_steps"] < 600 + 2
