"""Actors and learner as separate processes around one Reverb server: `rillet act` in a
subprocess writes transitions and reads the policy parameters the learner publishes; the learner
(this process, `local_actors=False`) samples from the server by address."""

import dataclasses
import os
import subprocess
import sys

import jax

from rillet.actors.envpool_env import env_step_spec
from rillet.learners import dqn
from rillet.learners.dqn import DQNConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.online import serve_replay, train_online


def test_actor_process_and_learner_process_share_replay(tmp_path):
    config = OnlineConfig(env_id="CartPole-v1", total_env_steps=4_000, eval_every_steps=0, eval_episodes=5,
                          run_dir=str(tmp_path / "learner"), progress=False,
                          learner=DQNConfig(hidden_sizes=(32, 32)),
                          replay=ReplayConfig(min_size_to_sample=200, batch_size=32, samples_per_insert=8.0),
                          actor=ActorConfig(num_envs=4))
    spec = env_step_spec(config.env_id)
    server = serve_replay(config, spec, dqn.init(jax.random.PRNGKey(0), spec, config.learner).online)
    address = f"127.0.0.1:{server.port}"
    actor = subprocess.Popen(
        [sys.executable, "-m", "rillet.pipelines.cli", "act", "dqn", "--env-id", "CartPole-v1",
         "--total-env-steps", "4000", "--actor.num-envs", "4", "--replay.address", address,
         "--replay.min-size-to-sample", "200", "--replay.batch-size", "32", "--replay.samples-per-insert", "8",
         "--dqn.hidden-sizes", "32", "32"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        learner_config = dataclasses.replace(
            config, local_actors=False, replay=dataclasses.replace(config.replay, address=address))
        summary = train_online(learner_config)
        out, _ = actor.communicate(timeout=120)
    finally:
        if actor.poll() is None:
            actor.kill()
        server.stop()
    assert actor.returncode == 0, out[-3000:]
    assert "wrote 4000 env steps" in out
    assert actor.pid != os.getpid()
    assert summary["updates"] > 50, summary
    assert 3_960 <= summary["env_steps"] <= 4_000, "the learner counts the actor process's env steps (not items)"
