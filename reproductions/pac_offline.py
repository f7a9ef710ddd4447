"""Offline PAC against behaviour cloning, from data that online PAC recorded. Results: docs/RESULTS.md,
"Offline PAC".

    rillet reproduce pac-data    online PAC per task, every episode recorded: the datasets
    rillet reproduce pac-vs-bc   offline PAC at small alphas and BC (alpha 1) on the same data, model
                                 and updates; per task the final evaluation beside the data's mean
    rillet reproduce pac-seeds   finished runs of several seeds: per setting and task each seed's
                                 return, and how many seeds beat BC (same seed) and the data mean
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

from rillet.errors import ConfigError
from rillet.evals.seeds import SeedResult, compare_seeds
from rillet.learners.pac import PACConfig
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.offline_config import SIZES, OfflineConfig
from rillet.reproductions.common import (compare_curves, grouped_bars, seed_dots, train_and_read_curve,
                                         train_offline_run, write_json)

# Returns of [0, 1] rewards on a [0, 100] support (online and offline).
PAC_V_MIN, PAC_V_MAX = 0.0, 100.0

# PAC online, to make the offline data ("record every episode, so the data mixes poor early behaviour
# with good late behaviour"). alpha = 0 (pure policy improvement), the "cpu-d32" Perceiver (the
# 17k-parameter "test" preset learned CartpoleSwingup more slowly), 5-step transitions, Polyak 0.01,
# 16 samples per insert. Chosen from tuning runs: with a fixed temperature eta = 1 the improvement
# weights stayed uniform and nothing was learned.
PAC_ONLINE = PACConfig(alpha=0.0, network=SIZES["cpu-d32"], learning_rate=3e-4, target_polyak_tau=0.01,
                       v_min=PAC_V_MIN, v_max=PAC_V_MAX)
PAC_ONLINE_REPLAY = ReplayConfig(n_step=5, batch_size=64, samples_per_insert=16.0, min_size_to_sample=1_000)

# PAC offline. alpha = 0.1 is "PAC": mostly policy improvement against the distributional critic, with
# a small behaviour-cloning term that keeps the policy near the data's support (where the critic was
# trained); alpha = 1 is behaviour cloning (the critic is still trained but never used by the policy).
# pac-vs-bc runs 0.1 and 0.5 by default, with the offline improvement bound kl_epsilon = 0.01
# (OfflineConfig says why; at 0.1, alpha = 0.1 could lose CartpoleBalance's balance).
# Offline the critic learns from fixed data, so targets may move faster than online: Polyak 0.02 (with
# 0.005 the greedy CartpoleBalance return was still at the data's early level after 10k updates).
PAC_ALPHA, BC_ALPHA, PAC_POLYAK_TAU = 0.1, 1.0, 0.02
PAC_VS_BC_ALPHAS = (0.1, 0.5)

# PAC loss settings that may differ between the runs compared by pac-seeds (behaviour cloning, alpha = 1,
# never uses them); everything else (data, model, updates, batches) must be the same.
PAC_SEED_SETTINGS = ("alpha", "beta", "eta", "learn_temperature", "kl_epsilon", "num_action_samples")
# Options of a run that do not change what it learns: pac-seeds ignores them too.
EXECUTION_OPTIONS = ("seed", "run_dir", "progress", "eval_every_steps", "checkpoint_every_steps",
                     "log_every_steps", "compute_dtype", "attention")


def pac_data(tasks: tuple[str, ...] = ("CartpoleSwingup-v1", "CartpoleBalance-v1", "InvertedPendulum-v4"),
             out: str = "runs/pac-data", total_env_steps: int = 50_000, seed: int = 0) -> dict:
    """Online PAC (PAC_ONLINE) on each task in turn, every episode recorded as an RLDS dataset
    <out>/data/<task> (the input of pac-vs-bc and pac-scaling); runs under <out>/online/<task>.

    Args:
        tasks: EnvPool env ids with continuous actions, one run and one dataset each.
        out: the folder of the runs, the datasets, pac_data.png and pac_data.json.
        total_env_steps: the env-step budget of each run.
        seed: the seed of every run.
    """
    runs = {task: train_and_read_curve(OnlineConfig(
        agent="pac", learner=PAC_ONLINE, env_id=task, seed=seed, total_env_steps=total_env_steps,
        replay=PAC_ONLINE_REPLAY, actor=ActorConfig(num_envs=4), eval_every_steps=10_000, eval_episodes=4,
        progress=False, record_dir=os.path.join(out, "data", task), run_dir=os.path.join(out, "online", task)))
        for task in tasks}
    return compare_curves(out, "pac_data", runs, "PAC online (alpha 0), the runs recorded as datasets", target=None)


def pac_vs_bc(data: tuple[str, ...], out: str = "runs/pac-vs-bc", num_steps: int = 20_000, size: str = "cpu-d32",
              batch_size: int = 96, eval_episodes: int = 20, eval_max_episode_steps: int = 0, seed: int = 0,
              learning_rate: float = 3e-4, n_step: int = 5, target_polyak_tau: float = PAC_POLYAK_TAU,
              pac_alphas: tuple[float, ...] = PAC_VS_BC_ALPHAS, learning_rate_decay: bool = True,
              validation_fraction: float = 0.1, eval_action: str = "mean",
              kl_epsilon: float = OfflineConfig.kl_epsilon) -> dict:
    """The same Perceiver, data, batches and updates with small alphas (PAC; runs <out>/pac-alpha<a>)
    and alpha = 1 (BC; run <out>/bc); per task the final evaluation return of each (acting by its
    eval action, mean ± standard error) next to the dataset's mean episode return (table,
    pac_vs_bc.json, pac_vs_bc.png). Runs already trained to num_steps are only re-evaluated, so the
    runs may be trained in parallel first (`rillet train-offline`, same options). The options not
    listed below are `rillet train-offline`'s, the same for every run.

    Args:
        data: the RLDS datasets, one task each (e.g. pac-data's <out>/data/<task>).
        out: the folder of the runs, pac_vs_bc.json and pac_vs_bc.png.
        pac_alphas: the PAC runs' behaviour-cloning weights.
    """
    options = dict(num_steps=num_steps, size=size, batch_size=batch_size, eval_episodes=eval_episodes,
                   v_min=PAC_V_MIN, v_max=PAC_V_MAX, learning_rate=learning_rate, n_step=n_step,
                   target_polyak_tau=target_polyak_tau, learning_rate_decay=learning_rate_decay,
                   validation_fraction=validation_fraction, kl_epsilon=kl_epsilon,
                   eval_max_episode_steps=eval_max_episode_steps, eval_action=eval_action, seed=seed,
                   eval_every_steps=max(1, num_steps // 5), checkpoint_every_steps=num_steps)
    runs = {f"PAC (alpha {a:g})": train_offline_run(data, os.path.join(out, f"pac-alpha{a:g}"), alpha=a, **options)
            for a in pac_alphas}
    runs[f"BC (alpha {BC_ALPHA:g})"] = train_offline_run(data, os.path.join(out, "bc"), alpha=BC_ALPHA, **options)
    table, stderr = final_returns(runs)
    first = next(iter(runs.values()))
    results = {"table": table, "stderr": stderr, "eval_action": eval_action, "num_steps": num_steps, "size": size,
               "params": first["params"], "final_validation": {name: r["final_validation"] for name, r in runs.items()}}
    write_json(os.path.join(out, "pac_vs_bc.json"), results)
    columns = [*runs, "data_mean"]
    bars = {t: {"dataset mean" if c == "data_mean" else c: row[c] for c in columns} for t, row in table.items()}
    png = grouped_bars(bars, stderr, os.path.join(out, "pac_vs_bc.png"),
                       f"PAC vs BC offline ({size}, {num_steps} updates, {eval_action} action)")
    _print_returns(table, stderr, columns)
    print(f"figure: {png}")
    return results


def final_returns(runs: dict[str, dict]) -> tuple[dict, dict]:
    """From train-offline summaries of runs on the same data: per task {"data_mean", run: final
    evaluation's mean return}, and per task {run: its standard error}; None where a run has no evaluation.
    (Episodes differ in their start states; every run is evaluated with the same seeds.)"""
    first = next(iter(runs.values()))
    table, stderr = {}, {}
    for i, task in enumerate(t["name"] for t in first["tasks"]):
        evals = {name: r["tasks"][i].get("eval") for name, r in runs.items()}
        table[task] = {"data_mean": first["tasks"][i]["data_return_mean"],
                       **{name: None if e is None else e["return_mean"] for name, e in evals.items()}}
        stderr[task] = {name: None if e is None else e["return_std"] / math.sqrt(e["episodes"])
                        for name, e in evals.items()}
    return table, stderr


def _print_returns(table: dict, stderr: dict, columns: Sequence[str]) -> None:
    def cell(t, c):
        if table[t][c] is None:
            return "-"
        return f"{table[t][c]:.1f}" + ("" if stderr[t].get(c) is None else f" ± {stderr[t][c]:.1f}")

    print(f"{'task':>20} " + " ".join(f"{c:>18}" for c in columns))
    for t in table:
        print(f"{t:>20} " + " ".join(f"{cell(t, c):>18}" for c in columns))


def pac_seeds(runs: tuple[str, ...], out: str = "runs/pac-seeds", last: int = 1) -> dict:
    """Seeds of `rillet train-offline` runs that differ only in the seed and PAC loss settings
    (PAC_SEED_SETTINGS): per setting and task, each seed's return (the mean of its last `last`
    evaluations), and how many seeds beat BC (alpha 1, same seed) and the dataset mean on every task
    (table, pac_seeds.json, pac_seeds.png). Reads the run directories only; nothing is trained or evaluated.

    Args:
        runs: finished run directories, BC's among them for every seed.
        out: the folder of pac_seeds.json and pac_seeds.png.
        last: judge each seed by the mean of its last `last` evaluations.
    """
    if not runs:
        raise ConfigError("pac-seeds: give the run directories to compare (--runs DIR [DIR ...]).")
    configs, summary = _read_comparable_runs(runs)
    differing = [k for k in PAC_SEED_SETTINGS if len({c[k] for c in configs if c["alpha"] != BC_ALPHA}) > 1]
    differing = differing or ["alpha"]
    data_means = {t["name"]: t["data_return_mean"] for t in summary["tasks"]}
    try:
        table = compare_seeds([_seed_result(r, c, differing) for r, c in zip(runs, configs)], "BC", data_means, last)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    write_json(os.path.join(out, "pac_seeds.json"),
               {"last": last, "data_means": data_means, "settings": table, "runs": list(runs)})
    settings = sorted(table, key=lambda s: (s == "BC", s))
    png = seed_dots(table, settings, data_means, os.path.join(out, "pac_seeds.png"),
                    f"Offline PAC vs BC per seed (mean of the last {last} evaluation(s); dots: seeds)")
    _print_seeds(table, settings, data_means)
    print(f"figure: {png}")
    return table


def _read_comparable_runs(runs: Sequence[str]) -> tuple[list[dict], dict]:
    """Each run's config.json and the last run's summary.json; ConfigError if a run is not finished or
    the runs differ in anything but PAC_SEED_SETTINGS and EXECUTION_OPTIONS."""
    configs = []
    for run in runs:
        try:
            with open(os.path.join(run, "config.json")) as f, open(os.path.join(run, "summary.json")) as g:
                configs.append(json.load(f))
                summary = json.load(g)
        except (OSError, ValueError) as e:
            raise ConfigError(f"pac-seeds: '{run}' is not a finished `rillet train-offline` run ({e}).") from None
    for key in set(configs[0]) - set(PAC_SEED_SETTINGS) - set(EXECUTION_OPTIONS):
        if any(c.get(key) != configs[0][key] for c in configs):
            raise ConfigError(f"pac-seeds: the runs differ in '{key}' ({sorted({str(c.get(key)) for c in configs})})"
                              "; compare runs trained on the same data, model and updates.")
    return configs, summary


def _seed_result(run_dir: str, config: dict, differing: Sequence[str]) -> SeedResult:
    """The run's SeedResult, labelled "BC" or by its differing settings; config: its config.json."""
    from rillet.pipelines.offline import latest_evaluations

    label = "BC" if config["alpha"] == BC_ALPHA else "PAC " + " ".join(f"{k} {config[k]:g}" for k in differing)
    evals = latest_evaluations([e for e in read_jsonl(os.path.join(run_dir, "evals.jsonl")) if e.get("returns")])
    returns = {}
    for e in evals:
        for task, r in e["returns"].items():
            returns.setdefault(task, []).append(r["return_mean"])
    return SeedResult(label, config["seed"], returns)


def _print_seeds(table: dict, settings: Sequence[str], data_means: dict) -> None:
    tasks = sorted(data_means)
    print(f"{'setting':>34} " + " ".join(f"{t:>24}" for t in tasks) + "   beats BC and data on every task")
    for s in settings:
        cells = [f"{table[s]['mean'][t]:.1f} ± {table[s]['std'][t]:.1f}" for t in tasks]
        print(f"{s:>34} " + " ".join(f"{c:>24}" for c in cells)
              + f"   {len(table[s]['wins'])}/{len(table[s]['seeds'])} seeds {table[s]['wins']}"
              + (" (BC: the data mean only)" if s == "BC" else ""))
    print(f"{'dataset mean':>34} " + " ".join(f"{data_means[t]:>24.1f}" for t in tasks))
