"""Adding an agent is composing one record: a toy agent defined only here (DQN with an auxiliary
reward-prediction network as a second parameter group with its own optimiser) registers, trains a few
hundred updates through the real runner with a real Reverb server, checkpoints, resumes, evaluates,
and appears in the CLI, without any change outside this file."""

from __future__ import annotations

import dataclasses
import io
import contextlib
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rillet.actors.exploration import EpsilonLadder
from rillet.actors.policies import epsilon_greedy, greedy
from rillet.learners import dqn, optim, value_ops
from rillet.learners.agents import ActorParts, Agent, ReplayItem, register, unregister
from rillet.learners.networks import MLP
from rillet.learners.target_network import update_target
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.online import agent_spec, train_online

NAME = "toy-aux-dqn"


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    learning_rate: float = 1e-3
    aux_learning_rate: float = 3e-3
    aux_weight: float = 0.5
    hidden: int = 32
    target_update_period: int = 50

    def validate(self) -> "ToyConfig":
        if not self.learning_rate > 0 or not self.aux_learning_rate > 0:
            from rillet.errors import ConfigError

            raise ConfigError("ToyConfig learning rates must be > 0.")
        return self


class ToyState(eqx.Module):
    online: MLP
    target: MLP
    aux: MLP
    opt_state: dict
    steps: jax.Array


def groups(config: ToyConfig) -> dict:
    return {"q": optim.adam(config.learning_rate, max_grad_norm=10.0), "aux": optim.adam(config.aux_learning_rate)}


def init(key, spec, config: ToyConfig) -> ToyState:
    config.validate()
    k_q, k_aux = jax.random.split(optim.key_data(key))
    q = MLP(spec.observation.shape[0], (config.hidden,), spec.num_actions, k_q)
    aux = MLP(spec.observation.shape[0], (config.hidden,), 1, k_aux)
    modules = {"q": q, "aux": aux}
    return ToyState(q, q, aux, optim.init_groups(groups(config), modules), jnp.zeros((), jnp.int32))


def loss(modules, target, batch, config: ToyConfig):
    q_tm1, q_t = modules["q"](batch["observation"]), target(batch["next_observation"])
    td = jax.vmap(value_ops.q_learning)(q_tm1, batch["action"], batch["reward"], batch["discount"], q_t)
    aux = jnp.mean((modules["aux"](batch["observation"])[:, 0] - batch["reward"]) ** 2)
    return jnp.mean(optax.huber_loss(td)) + config.aux_weight * aux, {"td": td, "aux_loss": aux}


@eqx.filter_jit
def update(state: ToyState, batch, config: ToyConfig):
    modules, opt_state, (value, aux), norms = optim.group_step(
        loss, groups(config), {"q": state.online, "aux": state.aux}, state.opt_state, state.target, batch, config)
    steps = state.steps + 1
    target = update_target(modules["q"], state.target, steps, config.target_update_period)
    metrics = {"loss": value, "aux_loss": aux["aux_loss"], "priorities": jnp.abs(aux["td"]),
               "q_grad_norm": norms["q"], "aux_grad_norm": norms["aux"]}
    return ToyState(modules["q"], target, modules["aux"], opt_state, steps), metrics


def q_values(network, observation):
    return network(observation)


TOY = Agent(
    name=NAME, config_type=ToyConfig, spec=lambda env_spec, config: env_spec, init=init, update=update,
    network=lambda state: state.online,
    actor=lambda spec, config, n, exploration: ActorParts(epsilon_greedy(q_values), {"epsilon": exploration["epsilon"]}),
    evaluator=lambda spec, config, n: ActorParts(greedy(q_values), None),
    replay_item=lambda config: ReplayItem("transition"), check_batch=dqn.check_batch_spec,
    exploration=lambda config, actor: EpsilonLadder(actor.epsilon_base, actor.epsilon_alpha),
    summary="DQN with an auxiliary reward-prediction group (test only)")


@pytest.fixture()
def toy():
    register(TOY)
    yield TOY
    unregister(NAME)


def config_for(run_dir, total_env_steps):
    return OnlineConfig(agent=NAME, learner=ToyConfig(), env_id="CartPole-v1", total_env_steps=total_env_steps,
                        eval_every_steps=500, eval_episodes=3, checkpoint_every_updates=100, run_dir=str(run_dir),
                        progress=False, replay=ReplayConfig(min_size_to_sample=200, batch_size=32,
                                                            samples_per_insert=8.0, sampler="prioritized",
                                                            importance_exponent=0.5),
                        actor=ActorConfig(num_envs=4))


def restored(run_dir, config):
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), config.learner_fingerprint())
    try:
        return ckpt.restore(init(jax.random.PRNGKey(1), agent_spec(config), config.learner))
    finally:
        ckpt.close()


def test_a_toy_agent_trains_checkpoints_resumes_and_evaluates(toy, tmp_path):
    run_dir = tmp_path / "run"
    first = train_online(config_for(run_dir, 2_000))  # several hundred updates
    assert first["updates"] >= 200 and first["final_eval"]["episodes"] == 3
    state, meta = restored(run_dir, config_for(run_dir, 2_000))
    assert meta["updates"] == first["updates"] == int(state.steps)
    fresh = init(jax.random.PRNGKey(0), agent_spec(config_for(run_dir, 2_000)), ToyConfig())
    assert not np.allclose(np.asarray(state.aux.layers[0].weight), np.asarray(fresh.aux.layers[0].weight))
    assert int(jax.tree.leaves(state.opt_state["aux"])[0]) == int(state.steps)  # the aux group's own Adam count

    second = train_online(config_for(run_dir, 3_000))
    assert second["updates"] > first["updates"] and second["env_steps"] == 3_000
    metrics = read_jsonl(second["metrics"])
    aux = [r["learner/aux_loss"] for r in metrics if "learner/aux_loss" in r]
    assert len(aux) >= 3 and all(np.isfinite(aux))
    curve = read_jsonl(os.path.join(run_dir, "curve.jsonl"))
    assert curve[-1]["env_steps"] == 3_000 and len(curve) >= 5


def test_the_cli_offers_a_registered_agent_and_its_options(toy):
    from rillet.pipelines.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["train-online", NAME, "--help"])
    assert exit_.value.code == 0
    assert f"--{NAME}.aux-learning-rate" in out.getvalue() and "--dqn." not in out.getvalue()
