"""The offline runner: PAC (Perceiver actor-critic) trained from RLDS datasets, one task per dataset.

    rillet train-offline --data data/pointmass data/pendulum --agent pac --size test --num-steps 2000
    summary = train_offline(OfflineConfig(data=("data/pointmass", "data/pendulum"), run_dir="runs/x"))

Tasks. Each --data directory is one task, in the order given (task_id = its index); its
rillet_card.json gives the env_id and the StepSpec. Every task needs vector observations and
continuous actions in [-1, 1] (`pac.task_sizes`; anything else is a SpecMismatchError), and the card's
spec must match the EnvPool environment it names (evaluation acts there).

Batches. One Grain loader per task (`rillet.datasets.rlds_loader.rlds`, shuffled, endless, seeded
with seed + task index): "transitions" when n_step == 1 (the env discount d is multiplied by gamma
here) and "nstep" otherwise (its discount already holds gamma^m * prod d). Every batch holds an
EQUAL SHARE per task (batch_size / num_tasks rows each, so batch_size must divide by the number of
tasks): a small dataset is not drowned by a large one and each task weighs the same in the loss;
the price is that a small task's data repeats more often. Observations are zero-padded to obs_max
and actions to D_max (PAC masks the padded entries by task_id). `MixedBatches.get_state()` is the
list of the per-task Grain states; it is saved in the orbax checkpoint's meta (written atomically
with the learner state) and restored with set_state, so a resumed run sees the same batches.

Validation. A dataset's "validation" split is used when it has one (`rillet dataset split` makes
it); otherwise, with validation_fraction > 0, the runner makes such a split once with
`rillet.pipelines.dataset_cli.split` (a seeded choice of whole episodes, a copy of the dataset under
<run_dir>/data/; for big datasets split them beforehand instead). `validation_batches` fixed mixed
batches are read once; at every evaluation and at the end, the mean PAC loss terms over them are
reported (computed by `pac.update` with a fixed key; its new state is discarded: no update).

Evaluation. Per task, the PAC policy acting by `eval_action` (default "mean": the expected action per
dimension; `discretised_policy(task_id, num_bins, eval_action)`) runs `eval_episodes` episodes in
EnvPool on the task's env_id; the report sets each task's mean return next to the dataset's mean
episode return (from its card; compare only with the same episode length: `eval_max_episode_steps`
caps evaluation episodes like `max_episode_steps` capped the data).

Run directory: config.json, metrics.jsonl + tb/ (learner/*, time/*, validation/*, eval/<task>/*),
evals.jsonl (one line per evaluation), checkpoints/<step>/{state, meta}, curves.png (eval return per
task with the data's mean return dashed, and validation loss, against updates), summary.json.
Throughput (time/*, summary): learner_rows_per_s, loader_rows_per_s (rows / time in next(batches)) and
loader_wait_fraction (of the training loop's time; near 1: the loader starves the learner).
Resume: a run directory with checkpoints continues from the latest one (bit-identical on CPU);
a config that changes training (data, sizes, hyper-parameters, seed) raises CheckpointError.
NaN/inf batches are skipped by `pac.update` and counted (`learner/skipped_total`, summary).

The options and the CPU size ladder: `offline_config.py`; tasks, batches, validation: `offline_data.py`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Annotated, Any, Sequence

import numpy as np
import tyro

from rillet.errors import CheckpointError
from rillet.learners import pac
from rillet.learners.agents import get_agent
from rillet.learners.networks import perceiver
from rillet.pipelines.learning import LoopClock, learn, save_checkpoint
from rillet.pipelines.metrics import Progress
from rillet.pipelines.stages import Stream, every, last, take, tap
from rillet.pipelines.offline_config import (RETIRED_FINGERPRINT_KEYS, SIZES, OfflineConfig,  # noqa: F401
                                             network_config, param_count)
from rillet.pipelines.offline_data import MixedBatches, Task, open_tasks, task_sources

__all__ = ["OfflineConfig", "SIZES", "network_config", "param_count", "Task", "open_tasks", "MixedBatches",
           "train_offline", "train_offline_cmd", "load_run", "format_summary", "latest_evaluations"]


VALIDATION_TERMS = ("loss", "policy_loss", "bc_loss", "improvement_loss", "critic_loss", "q_data")


def _validation_loss(state, batches: list[dict], pac_config: pac.PACConfig, key) -> dict:
    """Mean PAC loss terms at `state`'s parameters over fixed batches; the updated state is discarded."""
    import equinox as eqx

    fixed = eqx.tree_at(lambda s: s.key, state, key)
    sums = {k: 0.0 for k in VALIDATION_TERMS}
    for batch in batches:
        _, m = pac.update(fixed, batch, pac_config)
        for k in VALIDATION_TERMS:
            sums[k] += float(m[k])
    return {k: v / len(batches) for k, v in sums.items()}


@functools.lru_cache(maxsize=None)
def _eval_policy(task_id: int, num_bins: int, action: str):
    """One jitted evaluation policy per (task, bins, action), shared by runs in this process."""
    from rillet.actors.policies import discretised_policy

    return discretised_policy(task_id, num_bins, action)


def _eval_returns(tasks: Sequence[Task], network, config: OfflineConfig, policies: list) -> dict:
    from rillet.evals.returns import greedy_return_stage  # the eval stage: any policy, return statistics

    kwargs = {"max_episode_steps": config.eval_max_episode_steps} if config.eval_max_episode_steps else {}
    return {t.name: greedy_return_stage(t.env_id, policy, config.eval_episodes, seed=config.seed + 10_000 + t.task_id,
                                        **kwargs)(network)
            for t, policy in zip(tasks, policies)}


def _plot(tasks: Sequence[Task], evals: list[dict], path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_v) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for t in tasks:
        c = colors[t.task_id % len(colors)]
        pts = [(e["step"], e["returns"][t.name]["return_mean"]) for e in evals if t.name in e.get("returns", {})]
        if pts:
            ax_r.plot(*zip(*pts), marker="o", color=c, label=t.name)
        if t.data_return_mean is not None:
            ax_r.axhline(t.data_return_mean, color=c, linestyle="--", alpha=0.7, label=f"{t.name} data mean")
    ax_r.set(xlabel="updates", ylabel="episode return", title="evaluation return per task")
    pts = [(e["step"], e["validation"]["loss"]) for e in evals if e.get("validation")]
    if pts:
        ax_v.plot(*zip(*pts), marker="o", label="loss")
        for k in ("bc_loss", "critic_loss"):
            ax_v.plot(*zip(*[(e["step"], e["validation"][k]) for e in evals if e.get("validation")]),
                      marker=".", linestyle=":", label=k)
    ax_v.set(xlabel="updates", ylabel="validation loss", title="validation loss (no update)")
    for ax in (ax_r, ax_v):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def train_offline(config: OfflineConfig) -> dict:
    """Runs (or resumes) an offline run; returns the summary (also written to <run_dir>/summary.json)."""
    from rillet.pipelines.checkpointing import Checkpointer
    from rillet.pipelines.metrics import MetricsWriter

    config.validate()
    tasks = open_tasks(config.data, check_env=config.eval_episodes > 0)
    run_dir = os.path.abspath(config.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), config.fingerprint(),
                        retired_keys=RETIRED_FINGERPRINT_KEYS)
    state, step, loader_states = _restore_or_init(ckpt, config, tasks)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    train_sources, val_sources = task_sources(tasks, config, run_dir)
    batches = MixedBatches(train_sources, tasks, "train", config, config.seed)
    if loader_states is not None and step < config.num_steps:  # a finished run only re-evaluates: a run
        batches.set_state(loader_states)  # directory copied elsewhere (its split data moved) still does
    metrics = MetricsWriter(run_dir)
    progress = Progress(config.progress, config.num_steps, step, unit="update",
                        desc=f"pac offline ({len(config.data)} task{'s' if len(config.data) > 1 else ''})")
    evaluation = _Evaluation(run_dir, tasks, config, _validation_batches(tasks, val_sources, config), metrics,
                             progress, step)
    started, start_step = time.time(), step
    try:
        state, step, clock = _train(config, state, step, batches, ckpt, metrics, progress, evaluation)
    finally:
        progress.close()
    last = evaluation.last or evaluation(step, state)  # nothing left to train: evaluate the restored state
    metrics.close()
    ckpt.close()
    png = _plot(tasks, latest_evaluations(evaluation.records), os.path.join(run_dir, "curves.png"),
                f"PAC offline, size {config.size}, alpha {config.alpha:g}, {config.eval_action} action")
    summary = {"steps": step, "tasks": _task_rows(tasks, last), "final_validation": last.get("validation"),
               "skipped_total": int(state.skipped), "params": perceiver.count_params(state.online),
               "size": config.size, "alpha": config.alpha, "eval_action": config.eval_action,
               "run_dir": run_dir, "checkpoints": ckpt.directory, "metrics": metrics.path,
               "evals": evaluation.path, "curves": png, "wall_s": round(time.time() - started, 1),
               **_throughput(clock.loader_s, clock.loop_s, clock.timed_updates * config.batch_size)}
    if step == start_step:  # only re-evaluated: keep the timing of the run that trained (if it left one)
        summary.update(_previous_timing(os.path.join(run_dir, "summary.json"), step))
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _restore_or_init(ckpt, config: OfflineConfig, tasks: Sequence[Task]):
    """(state committed to the first device, update count, loader states or None) of the latest
    checkpoint, or of a fresh PAC learner."""
    import jax

    if ckpt.latest_step() is None:
        state = get_agent("pac").init(jax.random.PRNGKey(config.seed), [t.spec for t in tasks], config.pac_config())
        step, loader_states = 0, None
    else:
        state, meta = ckpt.restore(_template(config, tasks))  # CheckpointError if written with another config
        step, loader_states = int(meta["step"]), meta["loader_states"]
        print(f"Resumed from {ckpt.directory} at update {step}.")
    return _on_device(state), step, loader_states  # fresh and restored states alike: one compiled update


def _validation_batches(tasks: Sequence[Task], val_sources, config: OfflineConfig) -> list[dict]:
    """`validation_batches` fixed mixed batches of the tasks that have validation data ([] if none)."""
    val_tasks = [t for t, s in zip(tasks, val_sources) if s is not None]
    if not val_tasks:
        return []
    stream = MixedBatches([s for s in val_sources if s is not None], val_tasks, "validation", config,
                          config.seed + 7_919)
    return [next(stream) for _ in range(config.validation_batches)]


class _Evaluation:
    """`evaluation(step, state) -> record`: the validation loss and the per-task returns at `state`,
    written to metrics and to <run_dir>/evals.jsonl (evaluations past the restored step are dropped)."""

    def __init__(self, run_dir: str, tasks, config: OfflineConfig, validation: list, metrics, progress, step: int):
        import jax

        from rillet.pipelines.metrics import read_jsonl

        self.tasks, self.config, self.validation = tasks, config, validation
        self.metrics, self.progress, self.last = metrics, progress, None
        self.pac_config = config.pac_config()
        self.val_key = _on_device(jax.random.key_data(jax.random.PRNGKey(config.seed + 104_729)))
        self.policies = [_eval_policy(t.task_id, self.pac_config.num_bins, config.eval_action) for t in tasks]
        self.path = os.path.join(run_dir, "evals.jsonl")
        self.records = [e for e in read_jsonl(self.path) if e["step"] <= step]

    def __call__(self, step: int, state) -> dict:
        record = {"step": step}
        if self.validation:
            record["validation"] = _validation_loss(state, self.validation, self.pac_config, self.val_key)
            self.metrics.write(step, record["validation"], prefix="validation/")
        if self.config.eval_episodes:
            record["eval_action"] = self.config.eval_action
            record["returns"] = _eval_returns(self.tasks, state.online, self.config, self.policies)
            for name, r in record["returns"].items():
                self.metrics.write(step, r, prefix=f"eval/{name}/")
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.progress.note(**({"val_loss": f"{record['validation']['loss']:.3f}"} if self.validation else {}))
        self.last = record
        return record


def _train(config: OfflineConfig, state, step: int, batches: MixedBatches, ckpt, metrics, progress, evaluation):
    """The learner's stage composition over the Grain batches, up to num_steps updates: the same
    learner, checkpoint and metrics stages as an online run. Returns (state, step, LoopClock)."""
    import jax

    agent, clock, end, start = get_agent("pac"), LoopClock(), config.num_steps, step

    def due(tick) -> bool:  # a stage below reads the state: charge the queued device work to the loop
        n = tick.step
        return (n % config.log_every_steps == 0 or n % config.checkpoint_every_steps == 0 or n == end
                or bool(config.eval_every_steps and n % config.eval_every_steps == 0))

    def log(tick) -> None:
        metrics.write(tick.step, tick.metrics, prefix="learner/")
        rates = _throughput(clock.loader_s, clock.loop_s, clock.timed_updates * config.batch_size)
        metrics.write(tick.step, {"updates_per_s": (tick.step - start) / max(time.perf_counter() - started, 1e-9),
                                  **{k: v for k, v in rates.items() if v is not None}}, prefix="time/")
        progress.note(loss=f"{float(tick.metrics['loss']):.3f}")

    meta = lambda tick: {"step": tick.step, "loader_states": batches.get_state()}  # noqa: E731
    stream = (Stream(clock.timed(batches)) | take(max(0, end - step))
              | learn(agent.update, state, config.pac_config(), start=step)
              | tap(lambda tick: progress.add())
              | tap(lambda tick: jax.block_until_ready(tick.state) if due(tick) else None)
              | tap(clock.lap)
              | every(config.log_every_steps, log, start=step, final=end)
              | every(config.checkpoint_every_steps, save_checkpoint(ckpt, meta), start=step, final=end)
              | every(config.eval_every_steps, lambda tick: evaluation(tick.step, tick.state), start=step, final=end)
              | tap(clock.restart))
    started = time.perf_counter()
    clock.start()
    final = last(stream)
    return (state, step, clock) if final is None else (final.state, final.step, clock)


def _task_rows(tasks: Sequence[Task], record: dict) -> list[dict]:
    """Per task: its data and, if evaluated, its evaluation return."""
    rows = []
    for t in tasks:
        row = {"task_id": t.task_id, "name": t.name, "env_id": t.env_id, "data": t.path, "obs_size": t.obs_size,
               "action_size": t.action_size, "data_episodes": t.data_episodes, "data_return_mean": t.data_return_mean}
        if "returns" in record:
            row["eval"] = record["returns"][t.name]
        rows.append(row)
    return rows


def _previous_timing(path: str, step: int) -> dict:
    """wall_s and throughput of the summary at `path` if it reports `step` updates; else {}."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    keys = ("wall_s", "loader_rows_per_s", "learner_rows_per_s", "loader_wait_fraction")
    return {k: old[k] for k in keys if k in old} if old.get("steps") == step else {}


def _throughput(loader_s: float, loop_s: float, rows: int) -> dict:
    """Rows/s delivered while waited on in next(batches) (what the loader sustains), rows/s consumed (loop
    updates/s x batch_size; evals, checkpoints excluded), fraction of loop time waiting; None if untimed."""
    if loader_s <= 0 or loop_s <= 0:
        return dict.fromkeys(("loader_rows_per_s", "learner_rows_per_s", "loader_wait_fraction"))
    return {"loader_rows_per_s": rows / loader_s, "learner_rows_per_s": rows / loop_s,
            "loader_wait_fraction": loader_s / loop_s}


def _on_device(tree):
    """Commits every array of `tree` to the first device. Orbax restores committed arrays and jit
    compiles separately for committed and uncommitted inputs; committing fresh states too keeps one."""
    import equinox as eqx
    import jax

    arrays, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.device_put(arrays, jax.devices()[0]), static)


def _template(config: OfflineConfig, tasks: Sequence[Task]):
    """A PACState of the right structure, shapes and dtypes (zeros) to restore a checkpoint into;
    traced, not compiled, so a resume does not pay for `pac.init`'s compilation."""
    import jax

    abstract = jax.eval_shape(lambda k: pac.init(k, [t.spec for t in tasks], config.pac_config()),
                              jax.random.PRNGKey(config.seed))
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)


def load_run(run_dir: str, step: int | None = None) -> tuple[OfflineConfig, list[Task], Any, dict]:
    """(config, tasks, PAC state, checkpoint meta) of a run directory's latest (or given) checkpoint."""
    from rillet.pipelines.checkpointing import Checkpointer

    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"'{run_dir}' is not a `rillet train-offline` run directory ({e}).") from None
    config = OfflineConfig(**{**raw, "data": tuple(raw["data"])})
    tasks = open_tasks(config.data, check_env=False)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), config.fingerprint(),
                        retired_keys=RETIRED_FINGERPRINT_KEYS)
    try:
        state, meta = ckpt.restore(_template(config, tasks), step)
    finally:
        ckpt.close()
    return config, tasks, state, meta


def latest_evaluations(evals: list[dict]) -> list[dict]:
    """One evaluation per step (the latest), in step order."""
    by_step = {e["step"]: e for e in evals}
    return [by_step[step] for step in sorted(by_step)]


def format_summary(summary: dict) -> str:
    """A small text table: per task, evaluation return vs the dataset's mean return; validation loss."""
    lines = [f"{'task':>24} {summary['eval_action'] + ' return':>14} {'data mean':>10}"]
    for t in summary["tasks"]:
        ev = t.get("eval", {}).get("return_mean")
        dm = t["data_return_mean"]
        lines.append(f"{t['name']:>24} {'-' if ev is None else f'{ev:.2f}':>14} "
                     f"{'-' if dm is None else f'{dm:.2f}':>10}")
    v = summary.get("final_validation")
    lines.append(f"after {summary['steps']} updates ({summary['params']} params, skipped {summary['skipped_total']}): "
                 + (f"validation loss {v['loss']:.4f} (bc {v['bc_loss']:.4f}, critic {v['critic_loss']:.4f})"
                    if v else "no validation data"))
    return "\n".join(lines)


# The config's fields are the command's options: --data, --size, --num-steps, ...
ConfigArg = Annotated[OfflineConfig, tyro.conf.arg(name="")]


def train_offline_cmd(config: ConfigArg) -> dict:
    """Trains PAC offline from RLDS datasets (one task per --data directory), resuming from --run-dir."""
    summary = train_offline(config)
    print(json.dumps(summary, indent=2))
    print(format_summary(summary))
    return summary
