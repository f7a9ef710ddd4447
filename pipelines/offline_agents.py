"""Offline training for the value agents (DQN, R2D2, HiMo, ...): the agent's learner on batches read
from one RLDS dataset instead of sampled from Reverb.

    rillet train-offline r2d2 --data runs/po-r2d2-data --observation-indices 0 2 --num-updates 20000 \
        --r2d2.burn-in 10 --r2d2.trace-length 20 --run-dir runs/offline-r2d2
    summary = train_offline_agent(AgentOfflineConfig(agent="dqn", data="data/cartpole", run_dir="runs/x"))

The batches are `agent_data.agent_batches`: the agent record's replay item (n-step transitions, or
sequences of its length every --sequence-period steps, recurrent extras the data lacks filled from
it), shuffled and endless. The loop is the online runner's learner stage (`learning.learn`) with the
same logging, checkpoints and evaluation: every --eval-every-updates updates the agent's evaluator
(greedy) plays --eval-episodes episodes of the dataset card's env_id (with --observation-indices,
which must give the dataset's observation shape). Priorities an update returns are ignored (the
data is sampled uniformly). --behaviour-cloning trains the same network (dqn's or r2d2's) by
cross-entropy on the dataset's actions instead, the baseline (`learners.behaviour_cloning`).

Run directory: config.json, metrics.jsonl + tb/ (learner/*, eval/*), curve.jsonl (updates, returns),
checkpoints/<updates>/{state, meta} with the loader's Grain state in meta, learning_curve.png and
summary.json (final evaluation beside the dataset's mean episode return). Resume: a run directory
with checkpoints continues from the latest one, mid-epoch exactly (the same batches follow); a
config that changes training raises CheckpointError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np

from rillet.datasets.rlds_reader import RldsEpisodes
from rillet.errors import ConfigError, SpecMismatchError
from rillet.evals.plots import learning_curve
from rillet.evals.returns import greedy_return_stage
from rillet.learners import behaviour_cloning
from rillet.learners.agents import get_agent
from rillet.pipelines.agent_data import agent_batches, learner_spec
from rillet.pipelines.checkpointing import Checkpointer, restore_state
from rillet.pipelines.config import ReplayConfig, _require
from rillet.pipelines.learning import learn, log_metrics, save_checkpoint
from rillet.pipelines.metrics import MetricsWriter
from rillet.pipelines.stages import Stream, every, last, take

LOG_EVERY_UPDATES = 100
CLONING_LOGITS = {"dqn": behaviour_cloning.transition_logits, "r2d2": behaviour_cloning.sequence_logits}
"""The agents whose network behaviour cloning trains, and how it reads their logits."""


@dataclasses.dataclass(frozen=True)
class AgentOfflineConfig:
    """A value agent trained from one RLDS dataset (see the module docstring)."""

    agent: str = "dqn"
    learner: Any = None
    """The agent's options (None: the record's defaults)."""
    data: str = ""
    """The RLDS dataset directory (its card names the env_id evaluation plays)."""
    observation_indices: tuple[int, ...] = ()
    """The entries of the env's observation the dataset kept (e.g. 0 2: CartPole without velocities)."""
    num_updates: int = 10_000
    batch_size: int = 32
    n_step: int = 3
    """n of the n-step transitions (transition agents)."""
    sequence_period: int = 40
    """Steps between the starts of the sequences cut from each episode (sequence agents)."""
    gamma: float = 0.99
    """Discount of the n-step transitions (sequence agents discount in their learner)."""
    seed: int = 0
    eval_every_updates: int = 2_000
    eval_episodes: int = 10
    checkpoint_every_updates: int = 2_000
    behaviour_cloning: bool = False
    """Train the agent's network by behaviour cloning instead (dqn, r2d2: `learners.behaviour_cloning`)."""
    run_dir: str = "runs/offline-agent"

    def __post_init__(self):
        if self.learner is None:
            object.__setattr__(self, "learner", get_agent(self.agent).default_config())

    def validate(self) -> "AgentOfflineConfig":
        agent = get_agent(self.agent)
        if not isinstance(self.learner, agent.config_type):
            raise ConfigError(f"learner is a {type(self.learner).__name__}; agent {self.agent!r} takes a "
                              f"{agent.config_type.__name__}.")
        _require(bool(self.data), "data", self.data, "an RLDS dataset directory")
        for name in ("num_updates", "batch_size", "n_step", "sequence_period", "eval_episodes",
                     "checkpoint_every_updates"):
            _require(getattr(self, name) >= 1, name.replace("_", "-"), getattr(self, name), ">= 1")
        _require(self.eval_every_updates >= 0, "eval-every-updates", self.eval_every_updates, ">= 0")
        _require(0 <= self.gamma <= 1, "gamma", self.gamma, "in [0, 1]")
        _require(not self.behaviour_cloning or self.agent in CLONING_LOGITS, "behaviour-cloning",
                 self.behaviour_cloning, f"False for agent {self.agent} (behaviour cloning takes the network of "
                 f"one of {sorted(CLONING_LOGITS)})")
        self.learner.validate()
        return self

    @property
    def replay(self) -> ReplayConfig:
        """The replay options `agent_batches` reads (batch size, n, sequence period)."""
        return ReplayConfig(batch_size=self.batch_size, n_step=self.n_step, sequence_period=self.sequence_period)

    @classmethod
    def from_json(cls, raw: dict) -> "AgentOfflineConfig":
        """The config a run directory's config.json holds."""
        agent = get_agent(raw["agent"])
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in raw.items() if k in fields}, "learner": agent.config_type(**raw["learner"]),
                      "observation_indices": tuple(raw.get("observation_indices", ()))})

    def fingerprint(self) -> dict:
        """What a checkpoint must agree with to be resumed: the training stream and the learner."""
        keep = ("agent", "observation_indices", "batch_size", "n_step", "sequence_period", "gamma", "seed",
                "behaviour_cloning")
        return {"data": os.path.abspath(self.data), **{k: getattr(self, k) for k in keep},
                "learner": dataclasses.asdict(self.learner)}


def train_offline_agent(config: AgentOfflineConfig) -> dict:
    """Trains (or resumes) `config`; returns the final evaluation and where things were written."""
    config.validate()
    agent, started = get_agent(config.agent), time.time()
    spec = learner_spec(config.data, "train", agent, config.learner)
    run_dir = os.path.abspath(config.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, sort_keys=True)
    evaluate = _evaluation(config, agent, spec)
    batches = agent_batches(config.data, config.agent, config.learner, config.replay, gamma=config.gamma,
                            seed=config.seed)
    state = agent.init(jax.random.PRNGKey(config.seed), spec, config.learner)
    ckpt, updates = Checkpointer(os.path.join(run_dir, "checkpoints"), config.fingerprint()), 0
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        updates = int(meta["updates"])
        batches.set_state(meta["loader"])
        print(f"Resumed from {ckpt.directory} at update {updates}.")
    metrics, evals = MetricsWriter(run_dir), []  # evals: [(updates, evaluation)] of this process

    def evaluate_at(step: int, learner_state) -> dict:
        result = evaluate(agent.network(learner_state))
        metrics.write(step, result, prefix="eval/")
        with open(os.path.join(run_dir, "curve.jsonl"), "a") as f:
            f.write(json.dumps({"updates": step, **result}) + "\n")
        evals.append((step, result))
        return result

    stream = (Stream(batches)
              | learn(_update(config, agent), state, config.learner, start=updates)
              | take(config.num_updates - updates)
              | every(LOG_EVERY_UPDATES, log_metrics(metrics, "learner/"), start=updates, final=config.num_updates)
              | every(config.checkpoint_every_updates,
                      save_checkpoint(ckpt, lambda t: {"updates": t.step, "loader": batches.get_state()}),
                      start=updates)
              | every(config.eval_every_updates, lambda t: evaluate_at(t.step, t.state), start=updates))
    final_tick = last(stream)
    if final_tick is not None:
        state, updates = final_tick.state, final_tick.step
        ckpt.save(updates, state, {"updates": updates, "loader": batches.get_state()})
    final = evals[-1][1] if evals and evals[-1][0] == updates else evaluate_at(updates, state)
    ckpt.close()
    metrics.close()
    curve = [(step, result["return_mean"]) for step, result in evals]
    png = learning_curve({f"{config.agent} greedy return": curve}, os.path.join(run_dir, "learning_curve.png"),
                         xlabel="updates", title=f"offline {config.agent} on {os.path.basename(config.data)}")
    summary = {"final_eval": final, "updates": updates, "data_return_mean": _data_return(config.data),
               "run_dir": run_dir, "checkpoints": ckpt.directory, "learning_curve": png, "metrics": metrics.path,
               "wall_s": round(time.time() - started, 1)}
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def load_offline_agent_run(run_dir: str, step: int | None = None):
    """(config, learner spec, learner state) of a `rillet train-offline AGENT` run directory's latest (or
    given) checkpoint; its dataset must still be where the run read it."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = AgentOfflineConfig.from_json(json.load(f))
    agent = get_agent(config.agent)
    spec = learner_spec(config.data, "train", agent, config.learner)
    state = restore_state(os.path.join(run_dir, "checkpoints"), config.fingerprint(),
                          agent.init(jax.random.PRNGKey(config.seed), spec, config.learner), step)
    return config, spec, state


def train_offline_agent_cmd(config: AgentOfflineConfig) -> dict:
    """Trains a value agent from one RLDS dataset (--data DIR), resuming from the run directory."""
    summary = train_offline_agent(config)
    final = summary["final_eval"]
    print(json.dumps(summary, indent=2))
    print(f"final greedy evaluation: mean return {final['return_mean']:.1f} ± {final['return_std']:.1f} over "
          f"{final['episodes']} episodes after {summary['updates']} updates (the dataset's episodes: "
          f"{summary['data_return_mean']:.1f})")
    return summary


def _update(config: AgentOfflineConfig, agent):
    """The agent's update, or behaviour cloning on its network."""
    if not config.behaviour_cloning:
        return agent.update
    logits = CLONING_LOGITS[config.agent]
    return lambda state, batch, learner: behaviour_cloning.update(state, batch, learner, logits)


def _evaluation(config: AgentOfflineConfig, agent, spec):
    """The greedy evaluation stage on the card's env_id; SpecMismatchError when the env's observation
    (after observation_indices) is not the dataset's."""
    from rillet.actors.environments import env_step_spec

    episodes = RldsEpisodes(config.data, "train")
    env_id = episodes.card.get("env_id", "")
    if not env_id:
        raise SpecMismatchError(f"'{config.data}' names no env_id in its card; evaluation needs one.")
    env_spec = env_step_spec(env_id, observation_indices=config.observation_indices)
    if env_spec.observation.shape != spec.observation.shape:
        raise SpecMismatchError(
            f"{env_id} observations are {env_spec.observation.shape} with observation_indices "
            f"{list(config.observation_indices)}, the dataset's are {spec.observation.shape}: pass the "
            "--observation-indices the dataset was recorded with.")
    parts = agent.evaluator(spec, config.learner, 1)
    return greedy_return_stage(env_id, parts.policy, config.eval_episodes, seed=config.seed + 10_000,
                               actor_state_fn=lambda n: agent.evaluator(spec, config.learner, n).actor_state,
                               observe=parts.observe, observation_indices=config.observation_indices)


def _data_return(path: str) -> float:
    """The dataset's mean episode return (its index)."""
    from rillet.datasets.rlds_loader import read_index

    return float(np.mean(read_index(RldsEpisodes(path, "train"))[1]))
