"""TDU and bootstrapped DQN end to end on bsuite's Deep Sea through the dm_env adapter: train, checkpoint,
resume (the actors record the bootstrap masks the replay signature asks for), metrics (sigma,
disagreement), every episode in episodes.jsonl."""

import dataclasses
import json
import os

from rillet.learners.tdu import TDUConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import train_online
from rillet.reproductions.deep_sea import deep_sea_config, episode_table

SIZE = 10


def test_tdu_trains_resumes_and_logs_on_deep_sea(tmp_path):
    run_dir = str(tmp_path / "tdu")
    config = deep_sea_config("tdu", SIZE, seed=0, episodes=48, run_dir=run_dir)
    config = dataclasses.replace(config, learner=TDUConfig(hidden_sizes=(16,), ensemble_size=6, exploration_members=3,
                                                           target_update_period=4),
                                 checkpoint_every_updates=100)
    first = train_online(config)
    assert first["env_steps"] >= 48 * (SIZE + 1) and first["updates"] > 100
    second = train_online(dataclasses.replace(config, total_env_steps=96 * (SIZE + 1)))
    assert second["updates"] > first["updates"] and second["env_steps"] >= 96 * (SIZE + 1)
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["env_id"] == "bsuite/deep_sea/0"
    learner = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "learner/sigma_mean" in r]
    assert learner and all(r["learner/sigma_max"] >= r["learner/sigma_mean"] >= 0 for r in learner)
    assert all("learner/disagreement" in r and "learner/bonus_mean" in r for r in learner)
    table = episode_table(run_dir, SIZE, episodes=10_000)
    episodes = read_jsonl(os.path.join(run_dir, "episodes.jsonl"))
    assert len(table["episode"]) >= 90 and all(e["length"] == SIZE for e in episodes)
    assert table["total_bad_episodes"][-1] == len(episodes) - table["treasure"].sum()


def test_bsuite_scores_hand_made_episode_tables():
    import numpy as np

    from rillet.reproductions.deep_sea import bsuite_solutions

    def table(treasure):
        treasure = np.asarray(treasure, bool)
        return {"episode": np.arange(1, len(treasure) + 1), "total_bad_episodes": np.cumsum(~treasure),
                "treasure": treasure, "size": np.full(len(treasure), SIZE)}

    late = table([False] * 100 + [True] * 200)  # 100 bad episodes, then only treasure
    never = table([False] * 300)
    rows = {r["agent"]: r for r in bsuite_solutions({("late", SIZE, 0): late, ("never", SIZE, 0): never}, 300)}
    # bsuite: solved at the first episode whose running share of bad episodes is below 0.8: 100 / e < 0.8
    assert rows["late"]["solved"] and rows["late"]["episode"] == 126 and rows["late"]["beat_dither"]
    assert not rows["never"]["solved"] and rows["never"]["episode"] == 300 and not rows["never"]["beat_dither"]
