"""R2D2 on Atari Pong end to end (`rillet reproduce pong-smoke`): the Nature-DQN conv torso + LSTM,
sequence replay and checkpoints on image observations. A smoke test of the image path on CPU: a
few thousand env steps learn nothing yet. Results: docs/RESULTS.md, "Recurrent agents".
"""

from __future__ import annotations

import os

from rillet.learners.r2d2 import R2D2Config
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.reproductions.common import compare_curves, train_and_read_curve

# Short sequences, a small table and 1 sample per insert: enough updates to write three checkpoints.
R2D2_PONG_SMOKE = R2D2Config(burn_in=4, trace_length=8, lstm_size=128, hidden_sizes=(128,), n_step=3,
                             target_update_period=100)
PONG_SMOKE_REPLAY = ReplayConfig(sequence_period=4, sampler="prioritized", priority_exponent=0.9, batch_size=4,
                                 min_size_to_sample=20, samples_per_insert=1.0, max_size=2_000)


def pong_smoke(out: str = "runs/pong-smoke", total_env_steps: int = 4_000, seed: int = 0) -> dict:
    """R2D2 on Pong-v5 with 4 environments, a checkpoint every 100 updates, one final evaluation
    episode; prints the checkpoints written.

    Args:
        out: the folder of the run (<out>/r2d2), pong_smoke.png and pong_smoke.json.
        total_env_steps: the env-step budget.
        seed: the run's seed.
    """
    run_dir = os.path.join(out, "r2d2")
    runs = {"R2D2 Pong": train_and_read_curve(OnlineConfig(
        agent="r2d2", learner=R2D2_PONG_SMOKE, env_id="Pong-v5", seed=seed, total_env_steps=total_env_steps,
        replay=PONG_SMOKE_REPLAY, actor=ActorConfig(num_envs=4), eval_every_steps=0, eval_episodes=1,
        checkpoint_every_updates=100, progress=False, run_dir=run_dir))}
    print(f"checkpoints written: {sorted(os.listdir(os.path.join(run_dir, 'checkpoints')))}")
    return compare_curves(out, "pong_smoke", runs, "R2D2 on Pong-v5 (smoke test)", target=None)
