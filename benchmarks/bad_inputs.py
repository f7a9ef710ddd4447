"""The bad inputs of issue 22's trial, each given to the real `rillet` command: what it shows.

    .venv/bin/python benchmarks/bad_inputs.py [--out DIR]

Builds what the inputs need first (a small DQN run directory, a small dataset, a damaged copy of it),
then runs each bad input as its own process and prints a markdown table: the input, the exit code, the
first line of the error, and whether that line is one rillet error ("rillet: error: ...", exit 2) and
nothing was written where the check says so. Exit code 1 if any input got a raw traceback instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

CLI = [sys.executable, "-m", "rillet.pipelines.cli"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
SMALL = ["--env-id", "CartPole-v1", "--total-env-steps", "2000", "--replay.min-size-to-sample", "200",
         "--eval-every-steps", "0", "--eval-episodes", "2", "--no-progress", "--dqn.hidden-sizes", "16"]


def rillet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=ENV, timeout=timeout)


def prepare(out: str) -> dict:
    """A finished DQN run, a dataset, a copy with a truncated shard, a file and a read-only directory."""
    paths = {k: os.path.join(out, k) for k in ("run", "data", "damaged", "file", "readonly")}
    done = rillet("train-online", "dqn", *SMALL, "--run-dir", paths["run"])
    assert done.returncode == 0, done.stderr[-2000:]
    made = rillet("dataset", "generate", "--env", "CartPole-v1", "--episodes", "60", "--out", paths["data"],
                  "--no-progress")
    assert made.returncode == 0, made.stderr[-2000:]
    shutil.copytree(paths["data"], paths["damaged"])
    shard = next(os.path.join(paths["damaged"], f) for f in sorted(os.listdir(paths["damaged"])) if "array_record" in f)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    open(paths["file"], "w").close()
    os.makedirs(paths["readonly"])
    os.chmod(paths["readonly"], 0o555)
    return paths


def cases(p: dict) -> list[tuple[str, list[str]]]:
    """(what the user did, the rillet arguments)."""
    train = ["train-online", "dqn", *SMALL]
    return [
        ("resume a run with another network", train[:-1] + ["32", "--run-dir", p["run"]]),
        ("resume a run with another gamma", train + ["--gamma", "0.9", "--run-dir", p["run"]]),
        ("learning rate 1e30 (divergence)", train + ["--dqn.learning-rate", "1e30", "--run-dir", p["run"] + "-lr"]),
        ("unreachable --replay.address (train-online)", train + ["--no-local-actors", "--replay.address",
                                                                 "127.0.0.1:1", "--replay.connect-timeout-s", "3",
                                                                 "--run-dir", p["run"] + "-remote"]),
        ("unreachable --replay.address (act)", ["act", "dqn", *SMALL, "--replay.address", "127.0.0.1:1",
                                                "--replay.connect-timeout-s", "3"]),
        ("train-offline on a dataset with a truncated shard", ["train-offline", "dqn", "--data", p["damaged"],
                                                               "--run-dir", p["run"] + "-offline"]),
        ("convert a dataset with a truncated shard", ["dataset", "convert", p["damaged"], "--out", p["data"] + "-c"]),
        ("split a dataset with a truncated shard", ["dataset", "split", p["damaged"], "--out", p["data"] + "-s",
                                                    "--validation-fraction", "0.2"]),
        ("validate a dataset with a truncated shard", ["dataset", "validate", p["damaged"]]),
        ("split --validation-fraction nan", ["dataset", "split", p["data"], "--out", p["data"] + "-n",
                                             "--validation-fraction", "nan"]),
        ("split --episodes-per-shard 0", ["dataset", "split", p["data"], "--out", p["data"] + "-z",
                                          "--validation-fraction", "0.2", "--episodes-per-shard", "0"]),
        ("merge with no inputs", ["dataset", "merge", "--out", p["data"] + "-m"]),
        ("merge a dataset with itself", ["dataset", "merge", "--inputs", p["data"], p["data"], "--out",
                                         p["data"] + "-mm"]),
        ("generate --num-envs 100000", ["dataset", "generate", "--env", "CartPole-v1", "--num-envs", "100000",
                                        "--out", p["data"] + "-g"]),
        ("generate into an --out that is a file", ["dataset", "generate", "--env", "CartPole-v1", "--out", p["file"]]),
        ("a run dir that is a file", train + ["--run-dir", p["file"]]),
        ("a run dir under a file", train + ["--run-dir", os.path.join(p["file"], "run")]),
        ("a read-only run dir", train + ["--run-dir", os.path.join(p["readonly"], "run")]),
        ("an existing --record-dir", train + ["--record-dir", p["data"], "--run-dir", p["run"] + "-rec"]),
        ("--actor.num-envs 4096 with 3,000 steps", train + ["--actor.num-envs", "4096", "--total-env-steps", "3000",
                                                            "--run-dir", p["run"] + "-big"]),
        ("PAC with the prioritized sampler", ["train-online", "pac", "--replay.sampler", "prioritized",
                                              "--run-dir", p["run"] + "-pac"]),
        ("launch with samples-per-insert 0", ["launch", "dqn", "--replay.samples-per-insert", "0",
                                              "--run-dir", p["run"] + "-ray"]),
        ("an unknown agent", ["train-online", "dqnn"]),
        ("an unknown environment", ["train-online", "dqn", "--env-id", "CartPol-v1", "--run-dir", p["run"] + "-env"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bad-inputs-")
    started = time.time()
    paths = prepare(out)
    raw = 0
    print("| input | exit | what rillet shows (first line) |\n|---|---|---|")
    for what, argv in cases(paths):
        result = rillet(*argv)
        lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line
                 and "warn(" not in line]
        shown = next((line for line in lines if line.startswith("rillet: error:")), lines[-1] if lines else "")
        if "Required options" in result.stderr:  # tyro's own usage error: which option is missing
            shown = "usage error: " + " ".join(line.strip("│ ") for line in lines[1:3])
        clear = result.returncode == 2 and (shown.startswith("rillet: error:") or shown.startswith("usage error"))
        if what == "a read-only run dir" and os.geteuid() == 0:
            shown += " (run as root: directory permissions do not bind root, so there is nothing to refuse)"
        raw += not clear
        shown = shown.replace("|", "\\|")[:220]
        print(f"| {what} | {result.returncode} | {shown}{'' if clear else ' **(not one rillet error)**'} |",
              flush=True)
    os.chmod(paths["readonly"], 0o755)
    total = len(cases(paths))
    print(f"\n{total - raw} of {total} bad inputs give one rillet error; {time.time() - started:.0f} s")
    sys.exit(1 if raw else 0)


if __name__ == "__main__":
    main()
