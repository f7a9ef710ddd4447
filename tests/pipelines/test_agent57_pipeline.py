"""Agent57 through the real online runner (EnvPool MiniGrid actors, a real Reverb server): it trains,
checkpoints the learner and the actors' bandits, resumes with both, and reports per-arm episodes and
both value losses."""

import numpy as np

import dataclasses

from rillet.learners.agent57 import Agent57Config
from rillet.learners.recode import RECODEConfig
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online

SMALL = Agent57Config(burn_in=2, trace_length=6, lstm_size=16, hidden_sizes=(16,), novelty_hidden_sizes=(16,),
                      embedding_size=8, rnd_output_size=8, num_policies=10, memory_capacity=128, learning_rate=1e-3,
                      target_update_period=50, bandit_window=20)


def config_for(tmp_path, steps, agent="agent57", learner=SMALL):
    return OnlineConfig(agent=agent, env_id="MiniGrid-Empty-5x5-v0", total_env_steps=steps, seed=3,
                        learner=learner, eval_every_steps=0, eval_episodes=2, progress=False,
                        run_dir=str(tmp_path / "run"), checkpoint_every_updates=40,
                        replay=ReplayConfig(sampler="prioritized", priority_exponent=0.9, sequence_period=4,
                                            batch_size=8, min_size_to_sample=20, samples_per_insert=8.0),
                        actor=ActorConfig(num_envs=4))


def test_agent57_trains_checkpoints_bandits_and_resumes(tmp_path):
    first = train_online(config_for(tmp_path, 600))
    assert first["updates"] >= 40 and first["env_steps"] == 600
    carried = Checkpointer(first["checkpoints"], {}).restore_actor()
    pulls = carried["bandit"]["pulls"]
    assert pulls.shape == (4,) and np.all(pulls > 0), "every actor's bandit has played episodes"
    rows = read_jsonl(first["metrics"])
    assert any("learner/loss_e" in r and "learner/loss_i" in r for r in rows)
    assert any(k.startswith("actor/episodes_j") for r in rows for k in r)
    # Two more ticks from the checkpoint: fresh bandits would hold at most one pull each; these continue.
    second = train_online(config_for(tmp_path, 608))
    assert second["env_steps"] == 608 and second["updates"] >= first["updates"]
    resumed = Checkpointer(second["checkpoints"], {}).restore_actor()["bandit"]["pulls"]
    assert np.all(resumed >= pulls) and resumed.sum() >= pulls.sum()
    assert 0.0 <= second["final_eval"]["return_mean"] <= 1.0


def test_recode_trains_and_resumes_with_its_cluster_memory(tmp_path):
    """RECODE (MEME's learner, the cluster memory's reward) through the same runner: the actors' one
    memory is checkpointed whole and the resumed run continues it (no atom is lost)."""
    fields = {f.name: getattr(SMALL, f.name) for f in dataclasses.fields(Agent57Config)}
    small = dataclasses.replace(RECODEConfig(**fields), novelty="recode", torso="mlp", distillation=False,
                                cluster_capacity=256, embedding_model="casm", casm_d_model=16, casm_num_layers=1,
                                casm_context_length=8)
    def recode_config(steps):  # 3 updates per inserted sequence: the first run logs (every 100 updates)
        config = config_for(tmp_path, steps, "recode", small)
        return dataclasses.replace(config, replay=dataclasses.replace(config.replay, samples_per_insert=24.0))

    first = train_online(recode_config(240))
    assert first["updates"] >= 100
    before = Checkpointer(first["checkpoints"], {}).restore_actor()["episodic"]
    assert 0 < int(before["size"]) <= 256 and float(before["counts"].sum()) > 0
    rows = [r for r in read_jsonl(first["metrics"]) if "actor/cluster_atoms" in r]
    assert rows and 0 < rows[-1]["actor/cluster_atoms"] <= 256 and rows[-1]["actor/cluster_dist_mean"] >= 0
    assert {"actor/cluster_reward_mean", "actor/cluster_reward_std", "actor/cluster_count_total"} <= set(rows[-1])
    second = train_online(recode_config(360))
    after = Checkpointer(second["checkpoints"], {}).restore_actor()["episodic"]
    assert int(after["size"]) >= int(before["size"]) and int(after["steps"]) >= 360  # a fresh memory: 120
    assert 0.0 <= second["final_eval"]["return_mean"] <= 1.0
