"""`rillet launch` on a local Ray instance with real processes: a Reverb server, two actor processes,
the learner and an evaluator. One run is hurt twice while it learns: an actor process is killed with
SIGKILL (Ray restarts it and it rejoins), then the replay server is (Ray restarts it, it restores its
tables from Reverb's checkpoint, the actors and the learner reconnect); the run finishes and counts
both restarts. Bounded: the run's budget is small and every wait has a deadline."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rillet.pipelines.config import OnlineConfig, ReplayConfig
from rillet.pipelines.launch import RayConfig
from rillet.errors import ConfigError

ARGS = ["--env-id", "CartPole-v1", "--actor.num-envs", "4", "--replay.min-size-to-sample", "200",
        "--replay.batch-size", "32", "--replay.samples-per-insert", "32", "--dqn.hidden-sizes", "32", "32",
        "--eval-episodes", "3", "--checkpoint-every-updates", "200", "--ray.num-actors", "2",
        "--ray.replay-checkpoint-every-s", "2", "--ray.eval-every-s", "15", "--ray.log-every-s", "1"]
BUDGET = 10_000  # env steps, paced by the learner's rate limit (about one update per step)


def _pids(title: str) -> list[int]:
    """Processes whose command line starts with Ray's title for a role (e.g. "ray::ActorRole")."""
    out = subprocess.run(["pgrep", "-f", f"^{title}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait(predicate, what: str, deadline_s: float, proc: subprocess.Popen):
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the launch ended (exit {proc.returncode}) while waiting for {what}: "
                        f"{proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {deadline_s} s")


def _last_line(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def _updates(run_dir: str) -> int:
    last = _last_line(os.path.join(run_dir, "metrics.jsonl"))
    return int(last.get("learner/updates", 0))


def test_actor_and_replay_server_killed_mid_run_are_restarted_and_the_run_finishes(tmp_path):
    run_dir = str(tmp_path / "run")
    log = os.path.join(run_dir, "launch.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "rillet.pipelines.cli", "launch", "dqn", *ARGS,
                             "--total-env-steps", str(BUDGET), "--run-dir", run_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        _wait(lambda: _last_line(log).get("env_steps", 0) >= 1_000, "actor progress", 120, proc)
        victim = _pids("ray::ActorRole")[0]
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: _last_line(log).get("restarts", 0) >= 1 and _updates(run_dir) >= 200
              and os.listdir(os.path.join(run_dir, "replay_checkpoints")), "the actor's restart, learning and a "
              "replay checkpoint", 120, proc)
        updates_before = _updates(run_dir)
        os.kill(_pids("ray::ReplayRole")[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the Ray processes it started
    assert proc.returncode == 0, out[-4000:]
    with open(os.path.join(run_dir, "launch_summary.json")) as f:
        summary = json.load(f)
    assert summary["restarts"]["actor"] >= 1 and summary["restarts"]["replay"] == 1, summary
    assert summary["replay_items_restored"] and summary["replay_items_restored"][0] > 0, summary
    assert summary["updates"] > updates_before, "learning continued after the replay server's restart"
    assert summary["env_steps_actors"] >= BUDGET
    assert victim not in _pids("ray::ActorRole")
    assert "restart 1 of at most" in out
    with open(os.path.join(run_dir, "evaluations.jsonl")) as f:
        evaluations = [json.loads(line) for line in f]
    assert evaluations and all(e["episodes"] == 3 and e["learner_step"] >= 0 for e in evaluations)


def test_launch_options_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(ConfigError, match="ray.num-actors"):
        RayConfig(num_actors=0).validate()
    remote = OnlineConfig(local_actors=False, replay=ReplayConfig(address="127.0.0.1:1", samples_per_insert=0))
    with pytest.raises(ConfigError, match="sample for ever"):  # `train-online --no-local-actors` alike
        remote.validate()
    result = subprocess.run([sys.executable, "-m", "rillet.pipelines.cli", "launch", "dqn", "--replay.address",
                             "127.0.0.1:1", "--run-dir", str(tmp_path / "r")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "starts its own replay server" in result.stderr
    assert not os.path.exists(tmp_path / "r")
    result = subprocess.run([sys.executable, "-m", "rillet.pipelines.cli", "launch", "dqn",
                             "--replay.samples-per-insert", "0", "--run-dir", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "samples-per-insert > 0" in result.stderr
