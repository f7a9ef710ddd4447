"""Agent57 on Atari end to end on CPU (`rillet reproduce agent57-atari-smoke`): a few thousand steps on
Pong and on a hard-exploration game with the paper's network (Nature conv torsos, two LSTM 512 value
networks, episodic memory 30,000), trained, checkpointed and resumed, then scored by the evaluation
stages: the human-normalised score and the return relative to a random policy run beside it. A smoke
test of the image path, not a result (nothing is learned in so few steps). Results: docs/RESULTS.md.
"""

from __future__ import annotations

import resource

from rillet.actors.policies import random_policy
from rillet.actors.envpool_env import env_step_spec
from rillet.evals.atari_scores import normalised_scores, relative_to_random
from rillet.evals.returns import episode_returns
from rillet.learners.agent57 import Agent57Config
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.reproductions.common import train_and_read_curve

ATARI_AGENT57 = Agent57Config(burn_in=8, trace_length=16, num_policies=10)
SMOKE_REPLAY = ReplayConfig(sequence_period=8, batch_size=8, min_size_to_sample=16, samples_per_insert=2.0,
                            sampler="prioritized", priority_exponent=0.9, max_size=2000)


def agent57_atari_smoke(out: str = "runs/agent57-atari-smoke", games: tuple[str, ...] = ("Pong-v5",
                        "MontezumaRevenge-v5"), steps: tuple[int, ...] = (1000, 2000)) -> dict:
    """Per game: trains to steps[0], resumes from its checkpoint to each later budget, evaluates one greedy
    episode, and prints each leg, the normalised scores, the return relative to one random-policy episode,
    and the process's peak resident memory (MiB).

    Args:
        out: the folder of the run directories (one per game).
        games: EnvPool Atari-57 ids.
        steps: the env-step budget of each leg (the first trains from scratch, the others resume).
    """
    finals, relative = {}, {}
    for game in games:
        for budget in steps:
            result = train_and_read_curve(OnlineConfig(
                agent="agent57", env_id=game, learner=ATARI_AGENT57, replay=SMOKE_REPLAY, total_env_steps=budget,
                actor=ActorConfig(num_envs=4), eval_every_steps=0, eval_episodes=1, progress=False,
                run_dir=f"{out}/{game}", checkpoint_every_updates=20))["summary"]
            print(game, {k: result[k] for k in ("env_steps", "updates", "wall_s")}, flush=True)
        finals[game] = result["final_eval"]["return_mean"]
        spec = env_step_spec(game)
        random_return = float(episode_returns(game, random_policy(spec.num_actions), None, 1, seed=7)[0])
        relative[game] = relative_to_random(finals[game], random_return)
    scores = normalised_scores(finals)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"returns {finals}; relative to a random episode {relative}")
    print(f"human-normalised {scores['per_game']}; mean {scores['mean']:.4f}, median {scores['median']:.4f}")
    print(f"peak RSS {peak:.0f} MiB")
    return {"returns": finals, "relative_to_random": relative, "normalised": scores, "peak_rss_mib": peak}
