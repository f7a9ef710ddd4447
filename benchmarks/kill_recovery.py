"""Reliability under kill -9: a training run and dataset generation, each SIGKILLed at random moments.

    .venv/bin/python benchmarks/kill_recovery.py [--kills 20 --seed 0 --out DIR]

train-online: one run directory, `rillet train-online dqn` started `--kills` times and killed after a
random 8-30 s each (numpy seed --seed), then run to its end. After each kill the newest checkpoint on
disk must restore (`load_online_run`), and the next start must say it resumed from exactly that update.

dataset generate: `--kills` fresh output directories, each `rillet dataset generate` killed after a
random 5-25 s. Each must be either absent (the writer died before its atomic rename; only a marked
`.incomplete-*` sibling is left, which every reader refuses with a message saying what to do) or a
complete dataset that `rillet dataset validate` accepts (exit 0: every episode whole).

Prints one line per kill and the counts last; exit code 1 if any check failed.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

CLI = [sys.executable, "-m", "rillet.pipelines.cli"]
TRAIN = ["train-online", "dqn", "--env-id", "CartPole-v1", "--total-env-steps", "100000", "--eval-every-steps", "0",
         "--eval-episodes", "5", "--checkpoint-every-updates", "100", "--no-progress", "--dqn.hidden-sizes", "64", "64"]
GENERATE = ["dataset", "generate", "--env", "MountainCar-v0", "--episodes", "4000", "--num-envs", "4", "--no-progress"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}


def kill_after(args: list[str], seconds: float) -> str:
    """Starts `rillet ARGS`, SIGKILLs it after `seconds` (if still running); returns its output."""
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def train_online_kills(out: str, kills: int, rng: np.random.Generator) -> list[str]:
    """Returns the failed checks (empty: every kill recovered)."""
    from rillet.pipelines.online import load_online_run

    run_dir, failures, expected = os.path.join(out, "run"), [], None
    for k in range(kills):
        wait = float(rng.uniform(8, 30))
        log = kill_after(TRAIN + ["--run-dir", run_dir], wait)
        resumed = re.search(r"Resumed from .* at update (\d+)", log)
        training = "Replay: an embedded Reverb server" in log  # printed once the state is restored
        if expected is not None and training and (resumed is None or int(resumed.group(1)) != expected):
            failures.append(f"kill {k}: expected a resume at update {expected}, the log says "
                            f"{resumed.group(0) if resumed else 'no resume'}")
        leg = f"resumed at {resumed.group(1)}" if resumed else ("fresh start" if training else "killed while starting")
        expected = _newest_step(run_dir)
        if expected is not None:
            try:
                load_online_run(run_dir)
            except Exception as e:  # noqa: BLE001 - any failure to restore is what this script looks for
                failures.append(f"kill {k}: the newest checkpoint ({expected}) does not restore: {e!r}")
        print(f"train-online kill {k} after {wait:.1f} s: {leg}; newest checkpoint now {expected}", flush=True)
    final = subprocess.run(CLI + TRAIN + ["--run-dir", run_dir], capture_output=True, text=True, env=ENV)
    if final.returncode != 0 or not os.path.exists(os.path.join(run_dir, "summary.json")):
        failures.append(f"the final leg failed (exit {final.returncode}): {final.stdout[-500:]}{final.stderr[-500:]}")
    print(f"train-online final leg: exit {final.returncode}", flush=True)
    return failures


def _newest_step(run_dir: str) -> int | None:
    steps = [int(d) for d in os.listdir(os.path.join(run_dir, "checkpoints")) if d.isdigit()] \
        if os.path.isdir(os.path.join(run_dir, "checkpoints")) else []
    return max(steps) if steps else None


def generate_kills(out: str, kills: int, rng: np.random.Generator) -> tuple[list[str], dict]:
    """Returns the failed checks and the outcome counts {"complete", "absent"}."""
    failures, counts = [], {"complete": 0, "absent": 0}
    for k in range(kills):
        wait = float(rng.uniform(5, 25))
        data = os.path.join(out, f"data-{k}")
        kill_after(GENERATE + ["--out", data, "--seed", str(k)], wait)
        if os.path.exists(data):
            check = subprocess.run(CLI + ["dataset", "validate", data], capture_output=True, text=True, env=ENV)
            counts["complete"] += 1
            if check.returncode != 0:
                failures.append(f"kill {k}: {data} exists but validate refuses it: {check.stdout[-500:]}")
            outcome = f"complete, validate exit {check.returncode}"
        else:
            counts["absent"] += 1
            drafts = glob.glob(data + ".incomplete-*")
            refused = subprocess.run(CLI + ["dataset", "inspect", drafts[0]], capture_output=True, text=True,
                                     env=ENV) if drafts else None
            if refused is not None and (refused.returncode == 0 or "incomplete" not in refused.stderr.lower()):
                failures.append(f"kill {k}: the draft {drafts[0]} was not refused clearly: {refused.stderr[-300:]}")
            outcome = "absent" + (f"; draft refused: {refused.stderr.strip()[:160]}" if refused is not None else "")
        print(f"dataset generate kill {k} after {wait:.1f} s: {outcome}", flush=True)
    return failures, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    parser.add_argument("--only", choices=["train", "generate", ""], default="")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="kill-recovery-")
    rng = np.random.default_rng(args.seed)
    started = time.time()
    failures, counts = [], {}
    if args.only in ("", "train"):
        failures += train_online_kills(out, args.kills, rng)
    if args.only in ("", "generate"):
        more, counts = generate_kills(out, args.kills, rng)
        failures += more
    print(f"{args.kills} kills each; datasets {counts}; {len(failures)} failed checks; {time.time() - started:.0f} s")
    for f in failures:
        print("FAILED:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
