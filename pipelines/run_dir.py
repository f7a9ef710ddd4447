"""A run directory before anything is written to it: a path that can hold a run, and a resume that keeps
what defines the run.

    resuming = start_run_dir(run_dir, config.to_json(), free=ONLINE_FREE)   # then config.json is written

A run directory holding a checkpoint is resumed only with the config it was started with, except the
options that may change between legs (`free`: the budget, evaluation, logging and placement). Every
other difference (the network, γ, the replay table, the seed, the environment) is refused with the
list of what differs, before config.json or anything else is touched; the free differences are
printed. Keys one side lacks (an option added or retired by another rillet version) are not compared.
"""

from __future__ import annotations

import json
import os

from rillet.errors import CheckpointError, ConfigError
from rillet.validation import creatable_path

ONLINE_FREE = frozenset({
    "total_env_steps", "eval_every_steps", "eval_episodes", "stop_at_return", "stop_after_evals",
    "checkpoint_every_updates", "run_dir", "progress", "local_actors", "record_dir", "replay.address",
    "replay.connect_timeout_s", "actor.num_threads"})
SHOWN = 8  # differences listed in an error


def check_run_dir_path(path: str, option: str = "--run-dir") -> None:
    """ConfigError unless `path` is (or can be created as) a writable directory."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{option} '{path}' is a file, not a directory. Choose another {option}.")
    creatable_path(path, option)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"replay": {"n_step": 3}} -> {"replay.n_step": 3} (lists and scalars are leaves)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def differences(saved: dict, given: dict) -> dict[str, tuple]:
    """{dotted key: (saved value, given value)} over the keys both configs have."""
    a, b = flatten(saved), flatten(given)
    return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}


def has_checkpoint(run_dir: str) -> bool:
    """Whether run_dir/checkpoints holds a step directory (a run to resume)."""
    ckpt = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(ckpt) and any(name.isdigit() for name in os.listdir(ckpt))


def start_run_dir(run_dir: str, config_json: str, free: frozenset = ONLINE_FREE, option: str = "--run-dir") -> bool:
    """Checks run_dir (`check_run_dir_path`) and, if it holds a checkpoint, that `config_json` differs from
    its config.json only in `free` keys (CheckpointError listing the others; the free ones printed); then
    creates it and writes config.json. Returns whether the run resumes."""
    check_run_dir_path(run_dir, option)
    saved_path = os.path.join(run_dir, "config.json")
    resuming = has_checkpoint(run_dir) and os.path.exists(saved_path)
    if resuming:
        with open(saved_path) as f:
            diff = differences(json.load(f), json.loads(config_json))
        fixed = {k: v for k, v in diff.items() if k not in free}
        if fixed:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(fixed.items())[:SHOWN])
            more = f" (and {len(fixed) - SHOWN} more)" if len(fixed) > SHOWN else ""
            raise CheckpointError(
                f"'{run_dir}' holds a run started with other settings, so it cannot resume with these: {listed}"
                f"{more}. Resume with the saved values ({saved_path}), or start a new {option}. Nothing was written.")
        if diff:
            print(f"Resuming '{run_dir}' with changed options: "
                  + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()))
    os.makedirs(run_dir, exist_ok=True)
    with open(saved_path, "w") as f:
        f.write(config_json)
    return resuming
