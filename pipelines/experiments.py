"""The experiments behind the README's results, one function each (CLI: `rillet experiment ...`).

Each writes its runs under `out`, one figure (PNG) and a results.json, and prints a table.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from rillet.evals.plots import learning_curve
from rillet.learners.r2d2 import R2D2Config
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.offline_config import OfflineConfig

HIDE_VELOCITIES = (0, 2)  # CartPole observation: cart position, pole angle (velocities hidden)

# R2D2 scaled to CartPole: short sequences (10 burn-in + 20 trace), an LSTM of 128, prioritized
# sequence replay with the paper's exponent 0.9 and importance weights (beta 0.6), 64 sampled
# sequences per inserted one. Chosen from tuning runs on the partially observable task: with an
# LSTM of 64 and 32 samples per insert (R2D2_SMALL below) only 2 of 4 runs reached 400 in 150k steps;
# with these settings 3 of 3 did.
R2D2_CARTPOLE = R2D2Config(burn_in=10, trace_length=20, lstm_size=128, hidden_sizes=(128,), gamma=0.99,
                           learning_rate=3e-4, adam_eps=1e-6, target_update_period=1000)
R2D2_REPLAY = ReplayConfig(sequence_period=10, sampler="prioritized", priority_exponent=0.9,
                           importance_exponent=0.6, batch_size=32, min_size_to_sample=100,
                           samples_per_insert=64.0, max_size=20_000)
# The cheaper setting of the five-estimator comparison (half the updates, a smaller LSTM).
R2D2_SMALL = dataclasses.replace(R2D2_CARTPOLE, lstm_size=64, hidden_sizes=(64,))
R2D2_SMALL_REPLAY = dataclasses.replace(R2D2_REPLAY, samples_per_insert=32.0)


def _run(config: OnlineConfig) -> dict:
    from rillet.pipelines.online import train_online

    summary = train_online(config)
    curve = read_jsonl(os.path.join(config.run_dir, "curve.jsonl"))
    return {"summary": summary, "curve": [(c["env_steps"], c["return_mean"]) for c in curve]}


def _finish(out: str, name: str, runs: dict, title: str, target: float | None) -> dict:
    png = learning_curve({k: v["curve"] for k, v in runs.items()}, os.path.join(out, f"{name}.png"),
                         title=title, target=target)
    table = {k: {"best_return": max(y for _, y in v["curve"]), "final_return": v["curve"][-1][1],
                 "env_steps": v["summary"]["env_steps"], "updates": v["summary"]["updates"],
                 "wall_s": v["summary"]["wall_s"]} for k, v in runs.items()}
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(table, f, indent=2)
    for k, row in table.items():
        print(f"{k:>14}: best {row['best_return']:7.1f}  final {row['final_return']:7.1f}  "
              f"env steps {row['env_steps']}  updates {row['updates']}  {row['wall_s']} s")
    print(f"figure: {png}")
    return table


def po_cartpole(out: str = "runs/po-cartpole", total_env_steps: int = 150_000, seed: int = 0) -> dict:
    """CartPole with the velocities hidden: R2D2 against the feed-forward DQN, same env-step budget.
    R2D2 stops once a periodic 20-episode greedy eval reaches 400; DQN uses the whole budget."""
    base = OnlineConfig(env_id="CartPole-v1", observation_indices=HIDE_VELOCITIES, total_env_steps=total_env_steps,
                        seed=seed, eval_every_steps=5_000, eval_episodes=20, progress=False)
    runs = {
        "DQN": _run(dataclasses.replace(base, agent="dqn", run_dir=os.path.join(out, "dqn"))),
        "R2D2": _run(dataclasses.replace(base, agent="r2d2", r2d2=R2D2_CARTPOLE, replay=R2D2_REPLAY,
                                         stop_at_return=400.0, run_dir=os.path.join(out, "r2d2"))),
    }
    return _finish(out, "po_cartpole", runs, "CartPole without velocities", target=400.0)


def estimators(out: str = "runs/estimators", total_env_steps: int = 50_000, seed: int = 0,
               target_epsilon: float = 0.05) -> dict:
    """R2D2 on CartPole without velocities with each return estimator, same budget and seed. The
    target policy is epsilon-greedy (target_epsilon) so that Retrace, Watkins and tree-backup
    differ (with a greedy target they coincide)."""
    runs = {}
    for name in ("nstep", "retrace", "peng", "watkins", "tree_backup"):
        r2d2 = dataclasses.replace(R2D2_SMALL, estimator=name, target_epsilon=target_epsilon)
        runs[name] = _run(OnlineConfig(
            agent="r2d2", env_id="CartPole-v1", observation_indices=HIDE_VELOCITIES, seed=seed,
            total_env_steps=total_env_steps, eval_every_steps=5_000, eval_episodes=20, progress=False,
            r2d2=r2d2, replay=R2D2_SMALL_REPLAY, run_dir=os.path.join(out, name)))
    return _finish(out, "estimators", runs, "R2D2 return estimators, CartPole without velocities", target=None)


def pong_smoke(out: str = "runs/pong-smoke", total_env_steps: int = 4_000, seed: int = 0) -> dict:
    """R2D2 with the Nature-DQN conv torso + LSTM on Atari Pong-v5, end to end with checkpoints:
    a smoke test of the image path on CPU (a few thousand steps learn nothing yet)."""
    r2d2 = R2D2Config(burn_in=4, trace_length=8, lstm_size=128, hidden_sizes=(128,), n_step=3,
                      target_update_period=100)
    replay = ReplayConfig(sequence_period=4, sampler="prioritized", priority_exponent=0.9, batch_size=4,
                          min_size_to_sample=20, samples_per_insert=1.0, max_size=2_000)
    runs = {"R2D2 Pong": _run(OnlineConfig(
        agent="r2d2", env_id="Pong-v5", total_env_steps=total_env_steps, seed=seed, eval_every_steps=0,
        eval_episodes=1, checkpoint_every_updates=100, progress=False, r2d2=r2d2, replay=replay,
        actor=ActorConfig(num_envs=4), run_dir=os.path.join(out, "r2d2")))}
    checkpoints = sorted(os.listdir(os.path.join(out, "r2d2", "checkpoints")))
    print(f"checkpoints written: {checkpoints}")
    return _finish(out, "pong_smoke", runs, "R2D2 on Pong-v5 (smoke test)", target=None)


# PAC online, to make the offline data (issue: "record every episode, so the data mixes poor early
# behaviour with good late behaviour"). alpha = 0 (pure policy improvement), the "cpu-d32" Perceiver
# (the 17k-parameter "test" preset learned CartpoleSwingup more slowly), returns of [0, 1] rewards on
# a [0, 100] support, 5-step transitions, Polyak 0.01, 16 samples per insert. Chosen from tuning runs:
# with a fixed temperature eta = 1 the improvement weights stayed uniform and nothing was learned.
PAC_ONLINE_REPLAY = ReplayConfig(n_step=5, batch_size=64, samples_per_insert=16.0, min_size_to_sample=1_000)
PAC_V_MIN, PAC_V_MAX = 0.0, 100.0


def pac_data(tasks: tuple[str, ...] = ("CartpoleSwingup-v1", "CartpoleBalance-v1", "InvertedPendulum-v4"),
             out: str = "runs/pac-data", total_env_steps: int = 50_000, seed: int = 0) -> dict:
    """Online PAC on each task in turn, every episode recorded as an RLDS dataset <out>/data/<task>
    (the input of pac-vs-bc and pac-scaling); runs under <out>/online/<task>."""
    from rillet.learners.pac import PACConfig
    from rillet.pipelines.offline_config import SIZES

    pac = PACConfig(alpha=0.0, network=SIZES["cpu-d32"], learning_rate=3e-4, target_polyak_tau=0.01,
                    v_min=PAC_V_MIN, v_max=PAC_V_MAX)
    runs = {task: _run(OnlineConfig(
        agent="pac", env_id=task, seed=seed, total_env_steps=total_env_steps, eval_every_steps=10_000,
        eval_episodes=4, progress=False, pac=pac, replay=PAC_ONLINE_REPLAY, actor=ActorConfig(num_envs=4),
        record_dir=os.path.join(out, "data", task), run_dir=os.path.join(out, "online", task)))
        for task in tasks}
    return _finish(out, "pac_data", runs, "PAC online (alpha 0), the runs recorded as datasets", target=None)


# PAC offline. alpha = 0.1 is "PAC": mostly policy improvement against the distributional critic, with
# a small behaviour-cloning term that keeps the policy near the data's support (where the critic was
# trained); alpha = 1 is behaviour cloning (the critic is still trained but never used by the policy).
# pac-vs-bc runs 0.1 and 0.5 by default, with the offline improvement bound kl_epsilon = 0.01
# (OfflineConfig says why); at 0.1, alpha = 0.1 could lose CartpoleBalance's balance (README).
# Offline the critic learns from fixed data, so targets may move faster than online: Polyak 0.02 (with
# 0.005 the greedy CartpoleBalance return was still at the data's early level after 10k updates).
PAC_ALPHA, BC_ALPHA, PAC_POLYAK_TAU = 0.1, 1.0, 0.02
PAC_VS_BC_ALPHAS = (0.1, 0.5)


def _offline(data, run_dir: str, **kw) -> dict:
    from rillet.pipelines.offline import OfflineConfig, train_offline

    return train_offline(OfflineConfig(data=tuple(data), run_dir=run_dir, progress=False, **kw))


def pac_vs_bc(data: tuple[str, ...], out: str = "runs/pac-vs-bc", num_steps: int = 20_000, size: str = "cpu-d32",
              batch_size: int = 96, eval_episodes: int = 20, eval_max_episode_steps: int = 0, seed: int = 0,
              learning_rate: float = 3e-4, n_step: int = 5, target_polyak_tau: float = PAC_POLYAK_TAU,
              pac_alphas: tuple[float, ...] = PAC_VS_BC_ALPHAS, learning_rate_decay: bool = True,
              validation_fraction: float = 0.1, eval_action: str = "mean",
              kl_epsilon: float = OfflineConfig.kl_epsilon) -> dict:
    """The same Perceiver, data, batches and updates with small alphas (PAC; run dirs pac-alpha<a>) and
    alpha = 1 (BC; run dir bc); per task the final evaluation return of each (acting by `eval_action`)
    next to the dataset's mean episode return (table, JSON, PNG). Runs already trained to num_steps are
    only re-evaluated, so the runs may be trained in parallel first (`rillet train-offline`, same options)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    common = dict(num_steps=num_steps, size=size, batch_size=batch_size, eval_episodes=eval_episodes,
                  v_min=PAC_V_MIN, v_max=PAC_V_MAX, learning_rate=learning_rate, n_step=n_step,
                  target_polyak_tau=target_polyak_tau, learning_rate_decay=learning_rate_decay,
                  validation_fraction=validation_fraction, kl_epsilon=kl_epsilon,
                  eval_max_episode_steps=eval_max_episode_steps, eval_action=eval_action, seed=seed,
                  eval_every_steps=max(1, num_steps // 5), checkpoint_every_steps=num_steps)
    runs = {f"PAC (alpha {a:g})": _offline(data, os.path.join(out, f"pac-alpha{a:g}"), alpha=a, **common)
            for a in pac_alphas}
    runs[f"BC (alpha {BC_ALPHA:g})"] = _offline(data, os.path.join(out, "bc"), alpha=BC_ALPHA, **common)
    tasks = [t["name"] for t in next(iter(runs.values()))["tasks"]]
    table = {t: {"data_mean": next(iter(runs.values()))["tasks"][i]["data_return_mean"],
                 **{name: r["tasks"][i].get("eval", {}).get("return_mean") for name, r in runs.items()}}
             for i, t in enumerate(tasks)}
    # Standard error of each evaluation mean (episodes differ in their start states; the same seeds for every run).
    stderr = {t: {name: (r["tasks"][i]["eval"]["return_std"] / np.sqrt(r["tasks"][i]["eval"]["episodes"])
                         if "eval" in r["tasks"][i] else None) for name, r in runs.items()}
              for i, t in enumerate(tasks)}
    results = {"table": table, "stderr": stderr, "eval_action": eval_action, "num_steps": num_steps, "size": size,
               "params": next(iter(runs.values()))["params"],
               "final_validation": {name: r["final_validation"] for name, r in runs.items()}}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pac_vs_bc.json"), "w") as f:
        json.dump(results, f, indent=2)
    fig, ax = plt.subplots(figsize=(max(5, 2.5 * len(tasks)), 4), dpi=100)
    columns = [*runs, "data_mean"]
    width = 0.8 / len(columns)
    for j, col in enumerate(columns):
        ys = [np.nan if table[t][col] is None else table[t][col] for t in tasks]
        errs = [np.nan if stderr[t].get(col) is None else stderr[t][col] for t in tasks]
        ax.bar(np.arange(len(tasks)) + (j - (len(columns) - 1) / 2) * width, ys, width, yerr=errs, capsize=3,
               label="dataset mean" if col == "data_mean" else col)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set(ylabel="episode return", title=f"PAC vs BC offline ({size}, {num_steps} updates, {eval_action} action)")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pac_vs_bc.png"))
    plt.close(fig)
    def cell(t, c):
        if table[t][c] is None:
            return "-"
        return f"{table[t][c]:.1f}" + ("" if stderr[t].get(c) is None else f" ± {stderr[t][c]:.1f}")

    print(f"{'task':>20} " + " ".join(f"{c:>18}" for c in columns))
    for t in tasks:
        print(f"{t:>20} " + " ".join(f"{cell(t, c):>18}" for c in columns))
    print(f"figure: {os.path.join(out, 'pac_vs_bc.png')}")
    return results


def pac_scaling(data: tuple[str, ...], out: str = "runs/pac-scaling",
                sizes: tuple[str, ...] = ("test", "cpu-d32", "cpu-d64", "cpu-d128"), num_steps: int = 2_000,
                batch_size: int = 64, validation_fraction: float = 0.1, seed: int = 0, alpha: float = PAC_ALPHA,
                learning_rate: float = 3e-4, n_step: int = 5, target_polyak_tau: float = PAC_POLYAK_TAU,
                kl_epsilon: float = OfflineConfig.kl_epsilon) -> dict:
    """The final validation loss (PAC loss terms at `alpha` on held-out episodes, no update) per model
    size, same data and updates (table, JSON, PNG of loss against parameters). No environment evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for size in sizes:
        r = _offline(data, os.path.join(out, size), size=size, num_steps=num_steps, batch_size=batch_size,
                     alpha=alpha, learning_rate=learning_rate, v_min=PAC_V_MIN, v_max=PAC_V_MAX, n_step=n_step,
                     target_polyak_tau=target_polyak_tau, kl_epsilon=kl_epsilon,
                     eval_episodes=0, eval_every_steps=max(1, num_steps // 5), checkpoint_every_steps=num_steps,
                     validation_fraction=validation_fraction, seed=seed)
        if r["final_validation"] is None:
            from rillet.errors import ConfigError

            raise ConfigError("pac_scaling needs validation data: datasets with a 'validation' split or "
                              "validation_fraction > 0.")
        rows[size] = {"params": r["params"], **r["final_validation"], "wall_s": r["wall_s"]}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pac_scaling.json"), "w") as f:
        json.dump(rows, f, indent=2)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [rows[s]["params"] for s in sizes]
    for key in ("loss", "bc_loss", "critic_loss"):
        ax.plot(xs, [rows[s][key] for s in sizes], marker="o", label=f"validation {key}")
    for s in sizes:
        ax.annotate(s, (rows[s]["params"], rows[s]["loss"]), fontsize=7)
    ax.set(xscale="log", xlabel="parameters", ylabel="validation loss",
           title=f"PAC validation loss vs size (alpha {alpha:g}, {num_steps} updates)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pac_scaling.png"))
    plt.close(fig)
    print(f"{'size':>10} {'params':>10} {'val loss':>10} {'bc':>10} {'critic':>10} {'wall s':>8}")
    for s in sizes:
        r = rows[s]
        print(f"{s:>10} {r['params']:>10} {r['loss']:>10.4f} {r['bc_loss']:>10.4f} {r['critic_loss']:>10.4f} "
              f"{r['wall_s']:>8}")
    print(f"figure: {os.path.join(out, 'pac_scaling.png')}")
    return rows


# PAC loss settings that may differ between the runs compared by pac-seeds (behaviour cloning, alpha = 1,
# never uses them); everything else (data, model, updates, batches) must be the same.
PAC_SEED_SETTINGS = ("alpha", "beta", "eta", "learn_temperature", "kl_epsilon", "num_action_samples")


def _seed_result(run_dir: str, config: dict, differing: Sequence[str]):
    """The run's SeedResult; config: its config.json, already read."""
    from rillet.evals.seeds import SeedResult
    from rillet.pipelines.offline import latest_evaluations

    label = "BC" if config["alpha"] == BC_ALPHA else "PAC " + " ".join(f"{k} {config[k]:g}" for k in differing)
    evals = latest_evaluations([e for e in read_jsonl(os.path.join(run_dir, "evals.jsonl")) if e.get("returns")])
    returns = {}
    for e in evals:
        for task, r in e["returns"].items():
            returns.setdefault(task, []).append(r["return_mean"])
    return SeedResult(label, config["seed"], returns)


def pac_seeds(runs: tuple[str, ...], out: str = "runs/pac-seeds", last: int = 1) -> dict:
    """Seeds of `rillet train-offline` runs that differ only in the seed and PAC loss settings
    (PAC_SEED_SETTINGS): per setting and task, each seed's return (the mean of its last `last`
    evaluations), and how many seeds beat BC (alpha 1, same seed) and the dataset mean on every task
    (table, JSON, PNG). Reads the run directories only; nothing is trained or evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rillet.errors import ConfigError
    from rillet.evals.seeds import compare_seeds

    if not runs:
        raise ConfigError("pac-seeds: give the run directories to compare (--runs DIR [DIR ...]).")
    configs = []
    for run in runs:
        try:
            with open(os.path.join(run, "config.json")) as f, open(os.path.join(run, "summary.json")) as g:
                configs.append(json.load(f))
                summary = json.load(g)
        except (OSError, ValueError) as e:
            raise ConfigError(f"pac-seeds: '{run}' is not a finished `rillet train-offline` run ({e}).") from None
    ignored = set(PAC_SEED_SETTINGS) | {"seed", "run_dir", "progress", "eval_every_steps", "checkpoint_every_steps",
                                         "log_every_steps", "compute_dtype", "attention"}
    for key in set(configs[0]) - ignored:
        if any(c.get(key) != configs[0][key] for c in configs):
            raise ConfigError(f"pac-seeds: the runs differ in '{key}' ({sorted({str(c.get(key)) for c in configs})})"
                              "; compare runs trained on the same data, model and updates.")
    differing = [k for k in PAC_SEED_SETTINGS if len({c[k] for c in configs if c["alpha"] != BC_ALPHA}) > 1]
    differing = differing or ["alpha"]
    data_means = {t["name"]: t["data_return_mean"] for t in summary["tasks"]}
    try:
        table = compare_seeds([_seed_result(r, c, differing) for r, c in zip(runs, configs)], "BC", data_means, last)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pac_seeds.json"), "w") as f:
        json.dump({"last": last, "data_means": data_means, "settings": table, "runs": list(runs)}, f, indent=2)
    tasks, settings = sorted(data_means), sorted(table, key=lambda s: (s == "BC", s))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 4), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, s in enumerate(settings):
            ys = [row[task] for row in table[s]["per_seed"].values()]
            ax.bar(i, table[s]["mean"][task], 0.6, alpha=0.4)
            ax.scatter([i] * len(ys), ys, color="black", s=12, zorder=3)
        ax.axhline(data_means[task], color="grey", linestyle="--", label="dataset mean")
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right", fontsize=7)
        ax.set(title=task, ylabel="episode return")
        ax.legend(fontsize=7)
    fig.suptitle(f"Offline PAC vs BC per seed (mean of the last {last} evaluation(s); dots: seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pac_seeds.png"))
    plt.close(fig)
    print(f"{'setting':>34} " + " ".join(f"{t:>24}" for t in tasks) + "   beats BC and data on every task")
    for s in settings:
        cells = [f"{table[s]['mean'][t]:.1f} ± {table[s]['std'][t]:.1f}" for t in tasks]
        print(f"{s:>34} " + " ".join(f"{c:>24}" for c in cells)
              + f"   {len(table[s]['wins'])}/{len(table[s]['seeds'])} seeds {table[s]['wins']}"
              + (" (BC: the data mean only)" if s == "BC" else ""))
    print(f"{'dataset mean':>34} " + " ".join(f"{data_means[t]:>24.1f}" for t in tasks))
    print(f"figure: {os.path.join(out, 'pac_seeds.png')}")
    return table


def plot_runs(runs: tuple[str, ...], labels: tuple[str, ...] = (), out: str = "runs/curves.png",
              title: str = "", target: float = 0.0) -> str:
    """One figure of the greedy-eval curves (curve.jsonl) of several online run directories."""
    labels = labels or tuple(os.path.basename(os.path.normpath(r)) for r in runs)
    curves = {label: [(c["env_steps"], c["return_mean"]) for c in read_jsonl(os.path.join(run, "curve.jsonl"))]
              for label, run in zip(labels, runs)}
    for label, points in curves.items():
        best = max(points, key=lambda p: p[1]) if points else (0, float("nan"))
        print(f"{label:>24}: best {best[1]:7.1f} at {best[0]} env steps")
    return learning_curve(curves, out, title=title, target=target or None)


EXPERIMENTS = {"plot-runs": plot_runs, "po-cartpole": po_cartpole, "estimators": estimators, "pong-smoke": pong_smoke,
               "pac-data": pac_data, "pac-vs-bc": pac_vs_bc, "pac-scaling": pac_scaling,
               "pac-seeds": pac_seeds}
