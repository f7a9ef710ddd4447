"""Options of an offline run (`rillet train-offline`) and the CPU model-size ladder.

CPU size ladder (SIZES, besides the Perceiver presets "test", "xs", "s", "m", "l"): parameters with two
tasks (obs 4 / act 2 and obs 3 / act 1), K = 21 bins, C = 101 atoms (`param_count` gives any task set):
    "test"      16.6k   preset: d_model 16, 2 heads, 4 latents, 1 layer
    "cpu-d32"   59.3k   d_model 32, 2 heads, 8 latents, 1 layer
    "cpu-d64"    273k   d_model 64, 4 heads, 16 latents, 2 layers
    "cpu-d128"  1.06M   d_model 128, 4 heads, 16 latents, 2 layers (as many parameters as "xs", which
                        has 32 latents and 4 obs tokens: cheaper per update on CPU)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Literal, Optional, Sequence

from rillet import validation as check
from rillet.actors.policies import DISCRETISED_ACTIONS
from rillet.errors import ConfigError
from rillet.learners import pac
from rillet.learners.networks import perceiver

# Written into fingerprints by older rillet and ignored when resuming: "attention" was a PerceiverConfig
# field (so part of the network's fingerprint) before it became an execution choice in PACConfig.
RETIRED_FINGERPRINT_KEYS = ("attention",)

SIZES: dict[str, perceiver.PerceiverConfig] = {
    "cpu-d32": perceiver.PerceiverConfig(d_model=32, num_heads=2, num_latents=8, num_layers=1, num_obs_tokens=2),
    "cpu-d64": perceiver.PerceiverConfig(d_model=64, num_heads=4, num_latents=16, num_layers=2, num_obs_tokens=2),
    "cpu-d128": perceiver.PerceiverConfig(d_model=128, num_heads=4, num_latents=16, num_layers=2, num_obs_tokens=2),
}


def network_config(size: str) -> perceiver.PerceiverConfig:
    """A Perceiver preset ("test", "xs", "s", "m", "l") or a CPU ladder size ("cpu-d32", ...)."""
    if size in SIZES:
        return SIZES[size]
    if size in perceiver.PRESETS:
        return perceiver.PRESETS[size]
    raise ConfigError(f"OfflineConfig.size={size!r} is unknown; use a Perceiver preset "
                      f"{sorted(perceiver.PRESETS)} or a CPU size {sorted(SIZES)}. Fix --size.")


def param_count(size: str, obs_sizes: Sequence[int], action_sizes: Sequence[int], num_bins: int = 21,
                num_atoms: int = 101) -> int:
    """Parameters of the PAC network of `size` for these tasks (shapes only; nothing is allocated)."""
    import jax

    build = lambda k: perceiver.PerceiverActorCritic(  # noqa: E731
        network_config(size), tuple(obs_sizes), tuple(action_sizes), num_bins, num_atoms, k)
    return perceiver.count_params(jax.eval_shape(build, jax.random.PRNGKey(0)))


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """An offline run: PAC from RLDS datasets (one task each), validation loss, greedy evals, checkpoints."""

    data: tuple[str, ...] = ()
    """RLDS dataset directories, one task each, in task-id order."""
    agent: str = "pac"
    """Only 'pac' for now."""
    size: str = "test"
    """Perceiver preset (test, xs, s, m, l) or CPU size (cpu-d32, cpu-d64, cpu-d128)."""
    alpha: float = 0.75
    """Weight of behaviour cloning (1: pure BC; 0: pure policy improvement)."""
    beta: float = 1.0
    """Weight of the critic's distributional TD loss."""
    eta: float = 1.0
    """Temperature of the improvement weights softmax(Q / eta): fixed, or the learned one's start."""
    learn_temperature: bool = True
    """Learn eta by the MPO dual so that KL(pi_imp || pi') stays near kl_epsilon."""
    kl_epsilon: float = 0.01
    """The dual's bound on KL(pi_imp || pi') per update. Offline 0.01, a tenth of MPO's online 0.1: with
    0.1 and alpha = 0.1 the policy followed the critic's small errors on CartpoleBalance (final return
    under the data mean in 2 of 3 seeds at 40k updates); with 0.01 it beat BC there in 4 of 4 (README)."""
    learning_rate: float = 1e-4
    learning_rate_decay: bool = False
    """Cosine-decay the learning rate to 10% over num_steps (num_steps then joins the resume fingerprint)."""
    target_polyak_tau: float = 0.005
    """Target networks move this fraction towards the online ones per update."""
    num_action_samples: int = 16
    """M: policy samples per state for the improvement step and the TD target."""
    v_min: float = -100.0
    """Lowest atom of the return distribution (shared by all tasks)."""
    v_max: float = 100.0
    batch_size: int = 64
    """Rows per update, split equally between the tasks (must divide by the number of tasks)."""
    num_steps: int = 10_000
    """Updates in total (a resumed run continues up to this many)."""
    n_step: int = 1
    """1: one-step transitions; n > 1: n-step returns with bootstrap discount gamma^n."""
    gamma: float = 0.99
    seed: int = 0
    log_every_steps: int = 100
    eval_every_steps: int = 1_000
    """Validation loss and policy evaluation every this many updates (0: only at the end)."""
    eval_episodes: int = 10
    """Evaluation episodes per task and evaluation (0: no environment evaluation)."""
    eval_max_episode_steps: int = 0
    """Cap evaluation episodes at this many steps (0: the environment's own limit)."""
    eval_action: Literal["mean", "mode", "sample"] = "mean"
    """The action evaluated per dimension: the policy's expected action ("mean", deterministic), its most
    likely bin ("mode"; commits to one peak of a bang-bang policy), or a sample. Not part of training:
    a finished run may be re-evaluated with another."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Network compute precision (master weights and optimizer stay float32); bfloat16 on a GPU or TPU.
    An execution choice like attention below: neither is part of the resume fingerprint."""
    attention: Optional[Literal["cudnn"]] = None
    """cuDNN's fused self-attention on NVIDIA GPUs (needs --compute-dtype bfloat16); None: XLA's."""
    checkpoint_every_steps: int = 1_000
    validation_fraction: float = 0.1
    """Fraction of episodes held out for the validation loss when a dataset has no 'validation' split
    (0: use only existing validation splits)."""
    validation_batches: int = 4
    """Fixed validation batches (of batch_size rows) averaged for the validation loss."""
    run_dir: str = "runs/offline"
    progress: bool = True

    def validate(self) -> "OfflineConfig":
        """Raises ConfigError naming the first bad field and its option; returns self."""
        owner = "OfflineConfig"

        def need(ok: bool, name: str, rule: str) -> None:
            check.require(ok, owner, name, getattr(self, name), rule, fix=check.cli_option(name))

        def number(name: str, low: float = -math.inf, high: float = math.inf, **open_ends: bool) -> None:
            check.number(owner, name, getattr(self, name), low, high, fix=check.cli_option(name), **open_ends)

        def integer(name: str, low: int, high: int | None = None) -> None:
            check.integer(owner, name, getattr(self, name), low, high, fix=check.cli_option(name))

        need(isinstance(self.data, (tuple, list)) and len(self.data) >= 1
             and all(isinstance(d, str) and d for d in self.data), "data", "one or more dataset directories")
        need(len(set(os.path.abspath(d) for d in self.data)) == len(self.data), "data",
             "a list of distinct datasets (each may be given once)")
        check.one_of(owner, "agent", self.agent, ("pac",), fix="--agent pac (only PAC trains offline)")
        network_config(self.size)
        number("alpha", 0, 1)
        number("beta", 0)
        for name in ("eta", "kl_epsilon", "learning_rate"):
            number(name, 0, low_open=True)
        number("target_polyak_tau", 0, 1, low_open=True)
        integer("num_action_samples", 1)
        number("v_min")
        number("v_max")
        need(self.v_min < self.v_max, "v_min", f"< v_max={self.v_max}")
        integer("batch_size", 1)
        need(self.batch_size % len(self.data) == 0, "batch_size",
             f"a multiple of the number of tasks ({len(self.data)}): equal rows per task")
        integer("num_steps", 1)
        integer("n_step", 1, 100)
        number("gamma", 0, 1)
        for name, low in (("seed", 0), ("log_every_steps", 1), ("eval_every_steps", 0), ("eval_episodes", 0),
                          ("eval_max_episode_steps", 0), ("checkpoint_every_steps", 1), ("validation_batches", 1)):
            integer(name, low)
        check.one_of(owner, "eval_action", self.eval_action, DISCRETISED_ACTIONS, fix="--eval-action")
        check.one_of(owner, "compute_dtype", self.compute_dtype, pac.COMPUTE_DTYPES, fix="--compute-dtype")
        check.one_of(owner, "attention", self.attention, perceiver.ATTENTION_IMPLEMENTATIONS,
                     fix="--attention cudnn, or leave it unset for XLA's attention")
        need(self.attention is None or self.compute_dtype == "bfloat16", "attention",
             "None with --compute-dtype float32 (cuDNN attention needs --compute-dtype bfloat16)")
        number("validation_fraction", 0, 1, high_open=True)
        need(isinstance(self.run_dir, str) and bool(self.run_dir), "run_dir", "a directory path")
        self.pac_config().validate()
        return self

    def pac_config(self) -> pac.PACConfig:
        return pac.PACConfig(alpha=self.alpha, beta=self.beta, eta=self.eta,
                             learn_temperature=self.learn_temperature, kl_epsilon=self.kl_epsilon,
                             learning_rate=self.learning_rate, target_polyak_tau=self.target_polyak_tau,
                             learning_rate_decay_steps=self.num_steps if self.learning_rate_decay else 0,
                             num_action_samples=self.num_action_samples, gamma=self.gamma, v_min=self.v_min,
                             v_max=self.v_max, network=network_config(self.size),
                             compute_dtype=self.compute_dtype, attention=self.attention)

    @property
    def transform(self) -> str:
        return "transitions" if self.n_step == 1 else "nstep"

    def fingerprint(self) -> dict:
        """What a checkpoint must agree with to be resumed (the training stream and the model).
        Checkpoints whose fingerprint also holds a RETIRED_FINGERPRINT_KEYS entry resume too."""
        keep = ("agent", "size", "alpha", "beta", "eta", "learn_temperature", "kl_epsilon", "learning_rate",
                "target_polyak_tau", "num_action_samples", "v_min", "v_max",
                "batch_size", "n_step", "gamma", "seed", "validation_fraction", "learning_rate_decay")
        keep += ("num_steps",) if self.learning_rate_decay else ()
        return {"data": [os.path.abspath(d) for d in self.data], **{k: getattr(self, k) for k in keep},
                "network": dataclasses.asdict(network_config(self.size))}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=2)
