"""The `rillet` command line: options from the config dataclasses, one clear error per bad input."""

import subprocess
import sys


def rillet(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "rillet.pipelines.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_train_online_help_lists_config_options():
    r = rillet("train-online", "--help")
    assert r.returncode == 0, r.stderr
    for option in ("--env-id", "--total-env-steps", "--replay.samples-per-insert", "--replay.address",
                   "--learner.learning-rate", "--actor.num-envs"):
        assert option in r.stdout


def test_out_of_range_option_is_one_clear_error(tmp_path):
    r = rillet("train-online", "--replay.n-step", "0", "--run-dir", str(tmp_path))
    assert r.returncode == 2
    assert "replay.n-step=0 is out of range" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_env_id_is_one_clear_error(tmp_path):
    r = rillet("train-online", "--env-id", "Cartpole-v1", "--run-dir", str(tmp_path))
    assert r.returncode == 2
    assert "Did you mean: CartPole-v1" in r.stderr
    assert "Traceback" not in r.stderr


def test_act_without_replay_address_is_refused():
    r = rillet("act")
    assert r.returncode == 2 and "--replay.address" in r.stderr


def test_dataset_commands_are_wired_into_rillet(tmp_path):
    r = rillet("dataset", "generate", "--help")
    assert r.returncode == 0 and "--episodes" in r.stdout
    r = rillet("dataset", "inspect", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
