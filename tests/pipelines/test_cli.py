"""The `rillet` command line: the agent as a subcommand, options from the config dataclasses, one
clear error per bad input."""

import contextlib
import io
import subprocess
import sys
import types

import pytest

from rillet.learners.agents import agent_names
from rillet.pipelines.cli import main


def rillet(*args, timeout=120):
    """`rillet ARGS` in a fresh process (the installed entry point)."""
    return subprocess.run([sys.executable, "-m", "rillet.pipelines.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def rillet_here(*args):
    """`rillet ARGS` in this process (fast: no interpreter start-up): returncode, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # --help
            code = e.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_train_online_r2d2_help_shows_r2d2_options_only():
    r = rillet("train-online", "r2d2", "--help")  # the entry point, once
    assert r.returncode == 0, r.stderr
    for option in ("--env-id", "--total-env-steps", "--replay.samples-per-insert", "--replay.address",
                   "--r2d2.burn-in", "--r2d2.learning-rate", "--actor.num-envs"):
        assert option in r.stdout, option
    for other in ("--dqn.", "--pac.", "--learner.", "--agent"):
        assert other not in r.stdout, other


@pytest.mark.parametrize("command", ["train-online", "act", "replay-server"])
def test_every_agent_subcommand_help_works(command):
    for agent in agent_names():
        r = rillet_here(command, agent, "--help")
        assert r.returncode == 0 and f"--{agent}." in r.stdout, (command, agent, r.stderr[-500:])
    r = rillet_here(command, "--help")
    assert r.returncode == 0 and all(agent in r.stdout for agent in agent_names())


def test_every_command_and_group_help_works():
    for args in (["--help"], ["demo", "--help"], ["train-offline", "--help"], ["dataset", "--help"],
                 ["reproduce", "--help"], ["reproduce", "po-cartpole", "--help"]):
        r = rillet_here(*args)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (args, r.stderr[-500:])


@pytest.mark.parametrize("args, message", [
    (["train-online", "sarsa"], "unknown agent 'sarsa'"),
    (["train-online", "dqn", "--r2d2.burn-in", "10"], "--r2d2.burn-in is an option of agent r2d2, not of dqn"),
    (["train-online", "--agent", "r2d2"], "--agent is now a subcommand"),
    (["train-online", "--env-id", "CartPole-v1"], "name the agent first"),
    (["train-online", "dqn", "--learner.learning-rate", "1e-3"], "--learner.learning-rate is now --dqn.learning-rate"),
    (["experiment", "po-cartpole"], "rillet reproduce"),
])
def test_wrong_agent_or_old_option_forms_are_one_clear_error(args, message):
    r = rillet_here(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_out_of_range_option_is_one_clear_error(tmp_path):
    r = rillet("train-online", "dqn", "--replay.n-step", "0", "--run-dir", str(tmp_path))
    assert r.returncode == 2
    assert "replay.n-step=0 is invalid: it must be in [1, 100]. Fix --replay.n-step." in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_env_id_is_one_clear_error(tmp_path):
    r = rillet_here("train-online", "dqn", "--env-id", "Cartpole-v1", "--run-dir", str(tmp_path))
    assert r.returncode == 2
    assert "Did you mean: CartPole-v1" in r.stderr
    assert "Traceback" not in r.stderr


def test_act_without_replay_address_is_refused():
    r = rillet_here("act", "r2d2")
    assert r.returncode == 2 and "--replay.address" in r.stderr


def test_dataset_commands_are_wired_into_rillet(tmp_path):
    r = rillet("dataset", "generate", "--help")
    assert r.returncode == 0 and "--episodes" in r.stdout
    r = rillet("dataset", "inspect", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
