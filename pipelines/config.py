"""Config dataclasses for the runners. The CLI (tyro) builds its options from these; `validate`
checks every value at the boundary and raises ConfigError saying which field and what to do."""

from __future__ import annotations

import dataclasses
import json

from rillet.errors import ConfigError
from rillet.learners.dqn import DQNConfig
from rillet.learners.pac import PACConfig
from rillet.learners.r2d2 import R2D2Config


def _require(ok: bool, field: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{field}={value!r} is out of range: {rule}. Fix the option --{field}.")


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

    def validate(self) -> None:
        _require(self.max_size >= 1, "replay.max-size", self.max_size, "must be >= 1")
        _require(1 <= self.min_size_to_sample <= self.max_size, "replay.min-size-to-sample",
                 self.min_size_to_sample, f"must be in [1, replay.max-size={self.max_size}]")
        _require(self.samples_per_insert >= 0, "replay.samples-per-insert", self.samples_per_insert, "must be >= 0")
        _require(self.sampler in ("uniform", "prioritized"), "replay.sampler", self.sampler,
                 "must be 'uniform' or 'prioritized'")
        _require(0 <= self.priority_exponent <= 1, "replay.priority-exponent", self.priority_exponent, "must be in [0, 1]")
        _require(0 <= self.importance_exponent <= 1, "replay.importance-exponent", self.importance_exponent,
                 "must be in [0, 1]")
        _require(1 <= self.n_step <= 100, "replay.n-step", self.n_step, "must be in [1, 100]")
        _require(self.sequence_period >= 1, "replay.sequence-period", self.sequence_period, "must be >= 1")
        _require(1 <= self.batch_size <= 65536, "replay.batch-size", self.batch_size, "must be in [1, 65536]")


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
        _require(1 <= self.num_envs <= 4096, "actor.num-envs", self.num_envs, "must be in [1, 4096]")
        _require(0 <= self.epsilon_base <= 1, "actor.epsilon-base", self.epsilon_base, "must be in [0, 1]")
        _require(self.epsilon_alpha >= 0, "actor.epsilon-alpha", self.epsilon_alpha, "must be >= 0")
        _require(self.num_threads >= 0, "actor.num-threads", self.num_threads, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """An online run: EnvPool actors -> Reverb -> a pure learner, with evals and checkpoints."""

    env_id: str = "CartPole-v1"
    observation_indices: tuple[int, ...] = ()
    """Keep only these entries of a vector observation (e.g. 0 2: CartPole without velocities)."""
    agent: str = "dqn"
    seed: int = 0
    total_env_steps: int = 100_000
    """Environment steps (summed over all envs) after which acting stops."""
    gamma: float = 0.99
    learner: DQNConfig = DQNConfig()
    """Learner options of --agent dqn."""
    r2d2: R2D2Config = R2D2Config()
    """Learner options of --agent r2d2 (its gamma is r2d2.gamma)."""
    pac: PACConfig = PACConfig(alpha=0.0, network="test")
    """Learner options of --agent pac (online: alpha 0, a small Perceiver)."""
    record_dir: str = ""
    """Also write every actor episode to this RLDS dataset directory (empty: do not record)."""
    replay: ReplayConfig = ReplayConfig()
    actor: ActorConfig = ActorConfig()
    eval_every_steps: int = 10_000
    """Greedy evaluation every this many env steps (0: only at the end)."""
    eval_episodes: int = 20
    stop_at_return: float = 0.0
    """Stop early once a periodic greedy eval reaches this mean return (0: never)."""
    checkpoint_every_updates: int = 2_000
    run_dir: str = "runs/online"
    progress: bool = True
    local_actors: bool = True
    """Run the actors in a thread of this process; False: actors are other processes (`rillet act`)
    writing to replay.address, and this process only learns."""

    def validate(self) -> "OnlineConfig":
        from rillet.pipelines.agents import BUILDERS

        _require(self.agent in BUILDERS, "agent", self.agent, f"known agents: {sorted(BUILDERS)}")
        _require(self.total_env_steps >= 1, "total-env-steps", self.total_env_steps, "must be >= 1")
        _require(0 <= self.gamma <= 1, "gamma", self.gamma, "must be in [0, 1]")
        _require(self.eval_every_steps >= 0, "eval-every-steps", self.eval_every_steps, "must be >= 0")
        _require(self.eval_episodes >= 1, "eval-episodes", self.eval_episodes, "must be >= 1")
        _require(self.checkpoint_every_updates >= 1, "checkpoint-every-updates",
                 self.checkpoint_every_updates, "must be >= 1")
        _require(self.local_actors or bool(self.replay.address), "no-local-actors", not self.local_actors,
                 "a learner without local actors needs --replay.address of a shared Reverb server")
        self.learner_config().validate()
        self.replay.validate()
        self.actor.validate()
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def learner_fingerprint(self) -> dict:
        """The parts of the config a checkpoint must agree with to be restored."""
        return {"env_id": self.env_id, "observation_indices": list(self.observation_indices),
                "agent": self.agent, "learner": dataclasses.asdict(self.learner_config())}

    def learner_config(self):
        """The learner options of the chosen agent."""
        return {"dqn": self.learner, "r2d2": self.r2d2, "pac": self.pac}.get(self.agent, self.learner)
