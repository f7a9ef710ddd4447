"""The `rillet` command line. Options come from the config dataclasses (tyro); the agent is a
subcommand, and its options carry its name:

    rillet demo                                         # DQN on CartPole-v1, embedded Reverb
    rillet train-online dqn --env-id CartPole-v1 --total-env-steps 50000 --run-dir runs/x
    rillet train-online r2d2 --observation-indices 0 2 --r2d2.burn-in 10 --r2d2.lstm-size 128
    rillet train-online r2d2 --help                     # the run's options and R2D2's only
    rillet train-offline r2d2 --data DIR --num-updates 5000  # a value agent from an RLDS dataset
    rillet launch dqn --ray.num-actors 2 --run-dir runs/y  # the same run on Ray: actor processes, restarts
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
import typing
import warnings
from typing import Annotated, Callable

import tyro

from rillet.errors import ConfigError, RilletError
from rillet.learners.agents import agent_names, get_agent
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.launch import RayConfig
from rillet.learners.dqn import DQNConfig

DEMO_TARGET_RETURN = 475.0


DEMO_HOLD_EVALS = 4  # the demo stops once 4 evaluations in a row (15k env steps) reached the target
# An ensemble of 5 Q-networks, each actor environment following one member per episode (evaluation
# acts on their mean Q), 10-step targets and a learning rate decayed linearly from 1e-3 to 1e-4 over
# the 25k updates of a 100k-step run (100k steps x 32 samples per insert / batch 128): chosen from
# tuning runs of 100k steps without early stopping (docs/RESULTS.md, "Agent core"), where it reached
# 475 within 40k steps and held it to the end on each of seeds 0-5.
DEMO_DQN = DQNConfig(learning_rate=1e-3, learning_rate_end=1e-4, learning_rate_decay_updates=25_000, ensemble_size=5,
                     ensemble_acting="member")
DEMO_REPLAY = ReplayConfig(n_step=10)


def demo_config(run_dir: str = "") -> OnlineConfig:
    """The demo: DQN (5 double-Q networks acting one per episode, 10-step, Huber, decaying learning rate)
    on CartPole-v1 within 100k env steps. It evaluates 20 greedy episodes (on the members' mean) every 5k
    env steps and stops early once DEMO_HOLD_EVALS evaluations in a row reached a mean of 475 (the solve
    held, not touched once).
    """
    return OnlineConfig(
        agent="dqn", env_id="CartPole-v1", total_env_steps=100_000, seed=0, gamma=0.99,
        learner=DEMO_DQN, replay=DEMO_REPLAY, actor=ActorConfig(),
        eval_every_steps=5_000, eval_episodes=20, stop_at_return=DEMO_TARGET_RETURN,
        stop_after_evals=DEMO_HOLD_EVALS, run_dir=run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")


def demo(run_dir: str = "", seed: int = 0) -> dict:
    """Runs the demo and prints the run directory and the final evaluation."""
    from rillet.pipelines.online import train_online

    config = dataclasses.replace(demo_config(run_dir), seed=seed)
    print(f"rillet demo: DQN on {config.env_id}; run directory: {config.run_dir}", flush=True)
    summary = train_online(config)
    _print_curve(summary["run_dir"])
    _print_summary(summary, target=DEMO_TARGET_RETURN)
    return summary


def _print_curve(run_dir: str) -> None:
    """Every evaluation of the run: env steps and mean greedy return."""
    from rillet.pipelines.metrics import read_jsonl

    curve = read_jsonl(os.path.join(run_dir, "curve.jsonl"))
    print("evaluations (env steps: mean greedy return over the episodes):")
    print("  " + ", ".join(f"{c['env_steps']}: {c['return_mean']:.1f}" for c in curve))


def train_online_cmd(config: OnlineConfig) -> dict:
    """Trains an online agent (actors -> Reverb -> learner), resuming from the run directory."""
    from rillet.pipelines.online import train_online

    summary = train_online(config)
    _print_summary(summary)
    return summary


def act_cmd(config: OnlineConfig) -> int:
    """Acts in this process only, writing to the Reverb server at --replay.address and taking the
    policy parameters the learner publishes there (run `rillet train-online --no-local-actors`)."""
    from rillet.pipelines.acting import act
    from rillet.pipelines.online import check_remote_replay
    from rillet.pipelines.param_sync import ParamsSubscriber

    if not config.replay.address:
        raise ConfigError(f"rillet act needs --replay.address host:port of a running `rillet replay-server "
                          f"{config.agent}`.")
    spec, template = _spec_and_network(config)
    check_remote_replay(config, spec, "rillet act")
    params = ParamsSubscriber(config.replay.address, template, config.learner_fingerprint())
    steps = act(config, spec, config.replay.address, params, 0)
    print(f"rillet act: wrote {steps} env steps to {config.replay.address}")
    return steps


def launch_cmd(config: OnlineConfig, ray: RayConfig = RayConfig()) -> dict:
    """Trains an online agent on Ray: a Reverb server, --ray.num-actors actor processes, the learner and
    an evaluator as Ray actors, on a local Ray instance (127.0.0.1) or the cluster at --ray.address;
    processes that die are restarted, and the run resumes from its run directory."""
    from rillet.pipelines.launch import launch

    summary = launch(config, ray)
    _print_summary(summary)
    print(f"restarts: {summary['restarts']}; replay items restored: {summary['replay_items_restored']}")
    return summary


def replay_server_cmd(config: OnlineConfig, port: int = 0) -> None:
    """Serves the replay and params tables for `config` until interrupted; prints the address."""
    from rillet.pipelines.online import serve_replay

    spec, template = _spec_and_network(config)
    server = serve_replay(config, spec, template, port=port or None)
    print(f"rillet replay-server: serving port {server.port} on every network interface of this machine, "
          f"unauthenticated (Reverb binds all interfaces and has no access control): connect at "
          f"127.0.0.1:{server.port} here; fence the port from other machines (README, \"Scale "
          "out\"). Ctrl-C stops it.", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
        print("rillet replay-server: stopped.", flush=True)


def _spec_and_network(config: OnlineConfig):
    """The agent's step spec and a network template (for the params table) of a validated config."""
    import jax

    from rillet.pipelines.online import agent_spec

    config.validate()
    agent = get_agent(config.agent)
    spec = agent_spec(config)
    return spec, agent.network(agent.init(jax.random.PRNGKey(0), spec, config.learner))


def _print_summary(summary: dict, target: float | None = None) -> None:
    final = summary["final_eval"]
    print(json.dumps(summary, indent=2))
    line = (f"final greedy evaluation: mean return {final['return_mean']:.1f} ± {final['return_std']:.1f} "
            f"over {final['episodes']} episodes after {summary['env_steps']} env steps, "
            f"{summary['updates']} updates, {summary['wall_s']} s")
    if target is not None:
        line += f" (target {target:g}: {'reached' if final['return_mean'] >= target else 'NOT reached'})"
    print(line)


AGENT_COMMANDS: dict[str, Callable] = {"train-online": train_online_cmd, "launch": launch_cmd, "act": act_cmd,
                                       "replay-server": replay_server_cmd}


def online_config_type(agent_name: str, base: type = OnlineConfig) -> type:
    """`base` (OnlineConfig, AgentOfflineConfig) with `learner` typed as the agent's options under
    --<agent>.*, `agent` fixed, and the agent's replay defaults (`Agent.replay_defaults`) where it has them."""
    agent = get_agent(agent_name)
    learner = Annotated[agent.config_type, tyro.conf.arg(name=agent.name, help=f"{agent.name} options")]
    fields = [("agent", Annotated[str, tyro.conf.Suppress], dataclasses.field(default=agent.name)),
              ("learner", learner, dataclasses.field(default=agent.default_config()))]
    if agent.replay_defaults is not None and "replay" in {f.name for f in dataclasses.fields(base)}:
        replay = dataclasses.replace(ReplayConfig(), **agent.replay_defaults(agent.default_config()))
        fields.append(("replay", ReplayConfig, dataclasses.field(default=replay)))
    return dataclasses.make_dataclass(f"{base.__name__}_{agent.name.replace('-', '_')}", fields, bases=(base,),
                                      frozen=True)


def _agent_command(fn: Callable, agent_name: str) -> Callable:
    """`fn(config: <config class>, ...)` as a tyro command whose config options are the agent's."""
    hints = typing.get_type_hints(fn, include_extras=True)
    base = hints["config"]
    config_type = online_config_type(agent_name, base)

    def command(config, **kwargs):
        plain = base(**{f.name: getattr(config, f.name) for f in dataclasses.fields(base)})
        return fn(plain, **kwargs)

    params = [p.replace(annotation=Annotated[config_type, tyro.conf.arg(name="")] if p.name == "config"
                        else hints[p.name]) for p in inspect.signature(fn).parameters.values()]
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = fn.__doc__
    return command


def _agent_argv(command: str, argv: list[str]) -> str:
    """The agent named after `command` in argv; ConfigError saying how to name one otherwise, or when an
    option of another agent (or an old option form) is given."""
    names = agent_names()
    usage = f"rillet {command} {{{','.join(names)}}} [options]"
    if "--agent" in argv or any(a.startswith("--agent=") for a in argv):
        raise ConfigError(f"--agent is now a subcommand: {usage}, e.g. `rillet {command} r2d2 --help`.")
    if not argv or argv[0].startswith("-"):
        raise ConfigError(f"name the agent first: {usage} (`rillet {command} AGENT --help` lists its options).")
    agent = argv[0]
    if agent not in names:
        raise ConfigError(f"unknown agent {agent!r}; known agents: {names}. Usage: {usage}.")
    for arg in argv[1:]:
        prefix = arg[2:].split(".", 1)[0] if arg.startswith("--") and "." in arg.split("=", 1)[0] else None
        if prefix == "learner":
            raise ConfigError(f"{arg.split('=')[0]} is now --{agent}.{arg[len('--learner.'):].split('=')[0]} "
                              f"(the agent's options carry its name).")
        if prefix in names and prefix != agent:
            raise ConfigError(f"{arg.split('=')[0]} is an option of agent {prefix}, not of {agent}: run "
                              f"`rillet {command} {prefix} ...` or drop the option.")
    return agent


def _run_agent_command(command: str, argv: list[str], fn: Callable | None = None) -> None:
    agent = _agent_argv(command, argv)
    fn = fn or AGENT_COMMANDS[command]
    tyro.cli(_agent_command(fn, agent), args=argv[1:], prog=f"rillet {command} {agent}",
             description=f"{get_agent(agent).summary}. {fn.__doc__.strip()}")


def _reproductions() -> dict:
    from rillet.reproductions import REPRODUCTIONS

    return REPRODUCTIONS


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banner
    warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")  # gymnasium Box specs
    from rillet.pipelines.dataset_cli import dataset_commands
    from rillet.pipelines.offline import train_offline_cmd
    from rillet.pipelines.probe_cli import probe_commands

    argv = sys.argv[1:] if argv is None else list(argv)
    groups = {"reproduce": _reproductions, "dataset": dataset_commands, "probe": probe_commands}
    commands = {"demo": demo, "train-offline": train_offline_cmd}
    everything = [*commands, *AGENT_COMMANDS, *groups]
    try:
        if argv and argv[0] == "experiment":
            raise ConfigError("`rillet experiment NAME` is now `rillet reproduce NAME` "
                              "(see `rillet reproduce --help`).")
        if argv[:1] == ["train-offline"] and len(argv) > 1 and argv[1] in agent_names() and argv[1] != "pac":
            from rillet.pipelines.offline_agents import train_offline_agent_cmd

            _run_agent_command("train-offline", argv[1:], train_offline_agent_cmd)
        elif argv and argv[0] in AGENT_COMMANDS and not (len(argv) > 1 and argv[1] in ("-h", "--help")):
            _run_agent_command(argv[0], argv[1:])
        elif argv and argv[0] in AGENT_COMMANDS:
            print(f"usage: rillet {argv[0]} {{{','.join(agent_names())}}} [options]\n\n"
                  f"{AGENT_COMMANDS[argv[0]].__doc__.strip()}\n\nagents:")
            for name in agent_names():
                print(f"  {name:<10} {get_agent(name).summary}")
            print(f"\n`rillet {argv[0]} AGENT --help` lists the run's options and the agent's.")
        elif argv and argv[0] in groups:  # nested groups: `rillet reproduce po-cartpole ...`
            tyro.extras.subcommand_cli_from_dict(groups[argv[0]](), args=argv[1:], prog=f"rillet {argv[0]}")
        else:
            tyro.extras.subcommand_cli_from_dict(commands, args=argv, prog="rillet",
                                                 description="rillet: " + " | ".join(everything))
    except RilletError as e:
        print(f"rillet: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
