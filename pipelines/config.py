"""Config dataclasses for the runners. The CLI (tyro) builds its options from these; `validate`
checks every value at the boundary and raises ConfigError saying which field and what to do."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rillet import validation as check
from rillet.errors import ConfigError
from rillet.learners.agents import get_agent
from rillet.pipelines.transfer import TransferConfig


def _require(ok: bool, field: str, value, rule: str) -> None:
    """ConfigError "<field>=<value> is invalid: it must be <rule>. Fix --<field>." unless ok (field: the
    option's name, e.g. "replay.n-step")."""
    check.require(ok, "", field, value, rule, fix=f"--{field}")


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """Reverb replay: the table, its rate limiter, and the n-step transitions written into it."""

    max_size: int = 100_000
    """Table capacity in items (FIFO removal)."""
    min_size_to_sample: int = 1_000
    """Items inserted before the learner may sample."""
    samples_per_insert: float = 32.0
    """Rate limit: sampled items per inserted item; 0 disables the ratio limiter (MinSize only)."""
    sampler: str = "uniform"
    """'uniform' or 'prioritized'."""
    priority_exponent: float = 0.6
    importance_exponent: float = 0.0
    """Prioritized replay: weight each sample's loss by (N * P(i)) ** -beta / max over the batch
    (beta = this value; 0 disables the correction)."""
    n_step: int = 3
    """n of the n-step transitions (feed-forward agents)."""
    sequence_period: int = 40
    """Steps between the starts of overlapping sequences (recurrent agents)."""
    batch_size: int = 128
    address: str = ""
    """host:port of a Reverb server in another process; empty: an embedded in-process server."""
    connect_timeout_s: float = 60.0
    """With an address: how long to wait for that server to answer (at start, and after it restarts)."""
    demonstrations: tuple[str, ...] = ()
    """RLDS datasets whose records seed the replay before acting (`pipelines.demonstrations`)."""
    demo_fraction: float = 0.0
    """With demonstrations: the share of every batch sampled from them (0: they pre-fill the replay table)."""

    def validate(self) -> None:
        _require(self.max_size >= 1, "replay.max-size", self.max_size, ">= 1")
        _require(1 <= self.min_size_to_sample <= self.max_size, "replay.min-size-to-sample",
                 self.min_size_to_sample, f"in [1, replay.max-size={self.max_size}]")
        _require(self.samples_per_insert >= 0, "replay.samples-per-insert", self.samples_per_insert, ">= 0")
        _require(self.sampler in ("uniform", "prioritized"), "replay.sampler", self.sampler,
                 "'uniform' or 'prioritized'")
        _require(0 <= self.priority_exponent <= 1, "replay.priority-exponent", self.priority_exponent, "in [0, 1]")
        _require(0 <= self.importance_exponent <= 1, "replay.importance-exponent", self.importance_exponent,
                 "in [0, 1]")
        _require(1 <= self.n_step <= 100, "replay.n-step", self.n_step, "in [1, 100]")
        _require(self.sequence_period >= 1, "replay.sequence-period", self.sequence_period, ">= 1")
        _require(1 <= self.batch_size <= 65536, "replay.batch-size", self.batch_size, "in [1, 65536]")
        _require(0 < self.connect_timeout_s < 1e6, "replay.connect-timeout-s", self.connect_timeout_s,
                 "in (0, 1e6) seconds")
        _require(0 <= self.demo_fraction < 1, "replay.demo-fraction", self.demo_fraction, "in [0, 1)")
        _require(self.demo_fraction == 0 or bool(self.demonstrations), "replay.demo-fraction", self.demo_fraction,
                 "0 unless --replay.demonstrations names the datasets to sample from")
        _require(not self.demonstrations or not self.address, "replay.demonstrations", self.demonstrations,
                 "empty with --replay.address (demonstrations seed the embedded replay server only)")


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    num_envs: int = 8
    """Environments in the EnvPool pool (one Ape-X epsilon each)."""
    epsilon_base: float = 0.4
    """Ape-X: eps_i = base ** (1 + alpha * i / (N - 1))."""
    epsilon_alpha: float = 7.0
    num_threads: int = 0
    """EnvPool worker threads; 0 lets EnvPool choose."""

    def validate(self) -> None:
        _require(1 <= self.num_envs <= 4096, "actor.num-envs", self.num_envs, "in [1, 4096]")
        _require(0 <= self.epsilon_base <= 1, "actor.epsilon-base", self.epsilon_base, "in [0, 1]")
        _require(self.epsilon_alpha >= 0, "actor.epsilon-alpha", self.epsilon_alpha, ">= 0")
        _require(self.num_threads >= 0, "actor.num-threads", self.num_threads, ">= 0")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """An online run: EnvPool actors -> Reverb -> a pure learner, with evals and checkpoints.

    agent names a registered agent record; learner holds its options (an instance of the record's
    config_type; None: the record's defaults)."""

    agent: str = "dqn"
    learner: Any = None
    """The agent's options (DQNConfig for dqn, R2D2Config for r2d2, PACConfig for pac, ...)."""
    env_id: str = "CartPole-v1"
    observation_indices: tuple[int, ...] = ()
    """Keep only these entries of a vector observation (e.g. 0 2: CartPole without velocities)."""
    seed: int = 0
    total_env_steps: int = 100_000
    """Environment steps (summed over all envs) after which acting stops."""
    gamma: float = 0.99
    """Discount of the n-step transitions that transition agents' actors write (sequence agents
    discount in their learner, e.g. --r2d2.gamma)."""
    record_dir: str = ""
    """Also write every actor episode to this RLDS dataset directory (empty: do not record)."""
    replay: ReplayConfig = ReplayConfig()
    actor: ActorConfig = ActorConfig()
    eval_every_steps: int = 10_000
    """Greedy evaluation every this many env steps (0: only at the end)."""
    eval_episodes: int = 20
    stop_at_return: float = 0.0
    """Stop early once periodic greedy evals reach this mean return (0: never)..."""
    stop_after_evals: int = 1
    """...in this many evaluations in a row (e.g. 4: the return held for 3 evaluation periods)."""
    checkpoint_every_updates: int = 2_000
    run_dir: str = "runs/online"
    progress: bool = True
    local_actors: bool = True
    """Run the actors in a thread of this process; False: actors are other processes (`rillet act`)
    writing to replay.address, and this process only learns."""
    transfer: TransferConfig = TransferConfig()
    """Behaviour transfer from a pre-trained run (`pipelines.transfer`); empty --transfer.checkpoint: off."""

    def __post_init__(self):
        if self.learner is None:
            object.__setattr__(self, "learner", get_agent(self.agent).default_config())

    def validate(self) -> "OnlineConfig":
        agent = get_agent(self.agent)
        if not isinstance(self.learner, agent.config_type):
            raise ConfigError(f"OnlineConfig.learner is a {type(self.learner).__name__}; agent {self.agent!r} takes "
                              f"a {agent.config_type.__name__}. Pass learner={agent.config_type.__name__}(...).")
        _require(self.total_env_steps >= 1, "total-env-steps", self.total_env_steps, ">= 1")
        _require(0 <= self.gamma <= 1, "gamma", self.gamma, "in [0, 1]")
        _require(self.eval_every_steps >= 0, "eval-every-steps", self.eval_every_steps, ">= 0")
        _require(self.eval_episodes >= 1, "eval-episodes", self.eval_episodes, ">= 1")
        _require(self.stop_after_evals >= 1, "stop-after-evals", self.stop_after_evals, ">= 1")
        _require(self.checkpoint_every_updates >= 1, "checkpoint-every-updates",
                 self.checkpoint_every_updates, ">= 1")
        _require(self.local_actors or bool(self.replay.address), "no-local-actors", not self.local_actors,
                 "False only with --replay.address of a shared Reverb server (the actors' processes write there)")
        _require(self.local_actors or self.replay.samples_per_insert > 0, "replay.samples-per-insert",
                 self.replay.samples_per_insert, "> 0 with actors in other processes (the learner ends when the "
                 "rate limiter stops it and the actors insert no more; with 0 it would sample for ever)")
        _require(agent.prioritized or self.replay.sampler == "uniform", "replay.sampler", self.replay.sampler,
                 f"'uniform' for agent {self.agent} (its update returns no priorities)")
        item = agent.replay_item(self.learner)
        most = self.total_env_steps // (self.replay.sequence_period if item.kind == "sequence" else 1)
        _require(not self.local_actors or self.replay.demonstrations or most >= self.replay.min_size_to_sample,
                 "total-env-steps", self.total_env_steps,
                 f"enough for replay.min-size-to-sample={self.replay.min_size_to_sample} items before the first "
                 f"update (these actors write at most {most} {item.kind}s: no update would run); lower "
                 "--replay.min-size-to-sample or raise the budget")
        per_env = self.total_env_steps // max(self.actor.num_envs, 1)
        need = self.replay.n_step + 1 if item.kind != "sequence" else 2
        _require(not self.local_actors or self.replay.demonstrations or per_env >= need, "total-env-steps",
                 self.total_env_steps, f"at least {need} steps per environment (actor.num-envs={self.actor.num_envs} "
                 f"share it: {per_env} each, too few for one {item.kind} item); lower --actor.num-envs or raise the "
                 "budget")
        self.learner.validate()
        self.replay.validate()
        self.actor.validate()
        self.transfer.validate()
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: dict) -> "OnlineConfig":
        """The config a run directory's config.json holds (also one written before the agent record,
        with the agent's options under "r2d2" or "pac")."""
        agent = get_agent(raw.get("agent", "dqn"))
        learner = raw.get(agent.name, raw.get("learner")) if agent.name in ("r2d2", "pac") else raw.get("learner")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in raw.items() if k in fields},
                      "observation_indices": tuple(raw.get("observation_indices", ())),
                      "learner": agent.config_type(**learner), "replay": _replay_from_json(raw["replay"]),
                      "actor": ActorConfig(**raw["actor"]), "transfer": TransferConfig(**raw.get("transfer", {}))})

    def learner_fingerprint(self) -> dict:
        """The parts of the config a checkpoint must agree with to be restored."""
        fingerprint = {"env_id": self.env_id, "observation_indices": list(self.observation_indices),
                       "agent": self.agent, "learner": dataclasses.asdict(self.learner)}
        if self.transfer.enabled:  # (runs without transfer keep their fingerprint)
            fingerprint["transfer"] = dataclasses.asdict(self.transfer)
        return fingerprint


def _replay_from_json(raw: dict) -> ReplayConfig:
    """ReplayConfig from its JSON (lists back to tuples)."""
    return ReplayConfig(**{**raw, "demonstrations": tuple(raw.get("demonstrations", ()))})

