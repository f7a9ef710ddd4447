"""NGU through the real online runner (EnvPool MiniGrid actors, a real Reverb server): it trains,
checkpoints, resumes from its checkpoint and evaluates; the metrics carry the intrinsic-reward
statistics and the returns per policy index; the recorded replay items carry both rewards."""


import dataclasses

import numpy as np

from rillet.datasets.rlds_reader import rlds_episodes
from rillet.learners.ngu import NGUConfig
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import load_online_run, train_online

SMALL = NGUConfig(burn_in=2, trace_length=6, lstm_size=16, hidden_sizes=(16,), novelty_hidden_sizes=(16,),
                  embedding_size=8, rnd_output_size=8, num_policies=4, memory_capacity=256, learning_rate=1e-3,
                  target_update_period=50)


def config_for(tmp_path, steps):
    return OnlineConfig(agent="ngu", env_id="MiniGrid-Empty-5x5-v0", total_env_steps=steps, seed=1,
                        learner=SMALL, eval_every_steps=0, eval_episodes=2, progress=False,
                        run_dir=str(tmp_path / "run"), checkpoint_every_updates=50,
                        replay=ReplayConfig(sampler="prioritized", priority_exponent=0.9, sequence_period=4,
                                            batch_size=8, min_size_to_sample=20, samples_per_insert=8.0),
                        actor=ActorConfig(num_envs=4))


def test_ngu_trains_checkpoints_resumes_and_reports(tmp_path):
    first = train_online(dataclasses.replace(config_for(tmp_path, 800), record_dir=str(tmp_path / "rlds")))
    assert first["updates"] >= 100 and first["env_steps"] == 800
    _, _, state = load_online_run(first["run_dir"])
    assert int(state.steps) == first["updates"] and float(state.rnd_stats.count) > 0
    carried = Checkpointer(first["checkpoints"], {}).restore_actor()  # the actors' d_m^2, saved beside it
    assert carried["dist_count"].shape == (4,) and np.all(carried["dist_count"] > 0)
    episodes = rlds_episodes(str(tmp_path / "rlds"))  # the recorded data says what each reward was
    assert {"reward", "extras/prev_intrinsic_reward", "extras/prev_episodic_reward",
            "extras/policy_index"} <= set(episodes.layout)
    steps = episodes[0]["steps"]
    assert steps["extras"]["prev_intrinsic_reward"][0] == 0.0 and np.any(steps["extras"]["prev_intrinsic_reward"] > 0)

    second = train_online(config_for(tmp_path, 816))  # resumes from the same run directory for 4 ticks
    assert second["env_steps"] == 816 and second["updates"] >= first["updates"]
    rows = read_jsonl(second["metrics"])
    learner = [r for r in rows if "learner/intrinsic_reward" in r]
    actor = [r for r in rows if "actor/episode_intrinsic_return" in r and "actor/episode_episodic_return" in r]
    assert learner and actor
    assert all(np.isfinite(r["learner/lifelong_multiplier"]) and r["learner/lifelong_multiplier"] >= 1.0
               for r in learner)
    assert any(r["learner/intrinsic_reward"] > 0 for r in learner), "recorded r_i reached the learner"
    assert any(k.startswith("actor/return_j") for r in actor for k in r)
    assert 0.0 <= second["final_eval"]["return_mean"] <= 1.0  # MiniGrid returns lie in [0, 1]
