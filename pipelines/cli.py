"""The `rillet` command line. Options come from the config dataclasses (tyro).

    rillet demo                         # DQN on CartPole-v1, embedded Reverb, ends with an eval
    rillet train-online --env-id CartPole-v1 --total-env-steps 50000 --run-dir runs/x
    rillet train-online --help          # every option of OnlineConfig
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from typing import Annotated

import tyro

from rillet.errors import ConfigError, RilletError
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.learners.dqn import DQNConfig

DEMO_TARGET_RETURN = 475.0
# The top-level config's fields are the command's options: --env-id, --replay.address, ...
ConfigArg = Annotated[OnlineConfig, tyro.conf.arg(name="")]


def demo_config(run_dir: str = "") -> OnlineConfig:
    """The demo: DQN (double-Q, 3-step, Huber) on CartPole-v1 within 100k env steps.

    It evaluates 20 greedy episodes every 5k env steps and stops early at a mean of 475.
    """
    return OnlineConfig(
        env_id="CartPole-v1", total_env_steps=100_000, seed=0, gamma=0.99,
        learner=DQNConfig(), replay=ReplayConfig(), actor=ActorConfig(),
        eval_every_steps=5_000, eval_episodes=20, stop_at_return=DEMO_TARGET_RETURN,
        run_dir=run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")


def demo(run_dir: str = "", seed: int = 0) -> dict:
    """Runs the demo and prints the run directory and the final evaluation."""
    from rillet.pipelines.online import train_online

    config = dataclasses.replace(demo_config(run_dir), seed=seed)
    print(f"rillet demo: DQN on {config.env_id}; run directory: {config.run_dir}", flush=True)
    summary = train_online(config)
    _print_summary(summary, target=DEMO_TARGET_RETURN)
    return summary


def train_online_cmd(config: ConfigArg) -> dict:
    """Trains an online agent (actors -> Reverb -> learner), resuming from the run directory."""
    from rillet.pipelines.online import train_online

    summary = train_online(config)
    _print_summary(summary)
    return summary


def act_cmd(config: ConfigArg) -> int:
    """Acts in this process only, writing to the Reverb server at --replay.address and taking the
    policy parameters the learner publishes there (run `rillet train-online --no-local-actors`)."""
    from rillet.pipelines.acting import act
    from rillet.pipelines.param_sync import ParamsSubscriber

    if not config.replay.address:
        raise ConfigError("rillet act needs --replay.address host:port of a running `rillet replay-server`.")
    spec, template = _spec_and_network(config)
    steps = act(config, spec, config.replay.address, ParamsSubscriber(config.replay.address, template), 0)
    print(f"rillet act: wrote {steps} env steps to {config.replay.address}")
    return steps


def replay_server_cmd(config: ConfigArg, port: int = 0) -> None:
    """Serves the replay and params tables for `config` until interrupted; prints the address."""
    from rillet.pipelines.online import serve_replay

    spec, template = _spec_and_network(config)
    server = serve_replay(config, spec, template, port=port or None)
    print(f"rillet replay-server: listening on localhost:{server.port}", flush=True)
    server.wait()


def _spec_and_network(config: OnlineConfig):
    """The agent's step spec and a network template (for the params table) of a validated config."""
    import jax

    from rillet.actors.envpool_env import env_step_spec
    from rillet.pipelines.agents import builder_for

    config.validate()
    builder = builder_for(config.agent)
    spec = builder.spec(env_step_spec(config.env_id, config.observation_indices), config)
    return spec, builder.network(builder.init(jax.random.PRNGKey(0), spec, config))


def _print_summary(summary: dict, target: float | None = None) -> None:
    final = summary["final_eval"]
    print(json.dumps(summary, indent=2))
    line = (f"final greedy evaluation: mean return {final['return_mean']:.1f} ± {final['return_std']:.1f} "
            f"over {final['episodes']} episodes after {summary['env_steps']} env steps, "
            f"{summary['updates']} updates, {summary['wall_s']} s")
    if target is not None:
        line += f" (target {target:g}: {'reached' if final['return_mean'] >= target else 'NOT reached'})"
    print(line)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
    warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")  # gymnasium Box specs
    from rillet.pipelines.dataset_cli import dataset_commands
    from rillet.pipelines.experiments import EXPERIMENTS

    argv = sys.argv[1:] if argv is None else list(argv)
    groups = {"experiment": EXPERIMENTS, "dataset": dataset_commands()}
    from rillet.pipelines.offline import train_offline_cmd

    commands = {"demo": demo, "train-online": train_online_cmd, "train-offline": train_offline_cmd,
                "act": act_cmd, "replay-server": replay_server_cmd}
    try:
        if argv and argv[0] in groups:  # nested groups: `rillet experiment po-cartpole ...`
            tyro.extras.subcommand_cli_from_dict(groups[argv[0]], args=argv[1:], prog=f"rillet {argv[0]}")
        else:
            tyro.extras.subcommand_cli_from_dict(commands, args=argv, prog="rillet",
                                                 description="rillet: " + " | ".join([*commands, *groups]))
    except RilletError as e:
        print(f"rillet: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
