"""The online runner: EnvPool actors write n-step transitions into Reverb; a pure learner samples
them; Reverb's rate limiter keeps the two in step. Checkpoints, metrics, progress bar, periodic and
final greedy evaluation, and a learning-curve PNG, all under the run directory.

    result = train_online(OnlineConfig(env_id="CartPole-v1", run_dir="runs/demo"))
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import reverb

from rillet.actors.envpool_env import env_step_spec
from rillet.datasets import reverb_sampler, reverb_tables
from rillet.evals.plots import learning_curve
from rillet.evals.returns import greedy_return_stage
from rillet.pipelines.acting import TRANSITIONS_TABLE, ActorThread, LatestParams
from rillet.pipelines.agents import builder_for
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.config import OnlineConfig
from rillet.pipelines.metrics import MetricsWriter, Progress, read_jsonl
from rillet.pipelines.param_sync import ParamsPublisher, params_table

LOG_EVERY_UPDATES = 100
PUBLISH_EVERY_UPDATES = 20  # to actors in other processes, through the Reverb "params" table


def replay_table(config: OnlineConfig, spec):
    """The Reverb table an online run writes to and samples from (the agent's item signature)."""
    r = config.replay
    return reverb_tables.make_table(
        TRANSITIONS_TABLE, builder_for(config.agent).signature(spec, config), sampler=r.sampler,
        priority_exponent=r.priority_exponent, max_size=r.max_size,
        min_size_to_sample=r.min_size_to_sample, samples_per_insert=r.samples_per_insert or None)


def serve_replay(config: OnlineConfig, spec, params_template, port: int | None = None):
    """A Reverb server with the transitions table and the params table (for `rillet replay-server`)."""
    return reverb_tables.make_server([replay_table(config, spec), params_table(params_template)], port=port)


def _connect_replay(config: OnlineConfig, spec):
    """Returns (server or None, address). Embedded server unless config.replay.address is set."""
    if config.replay.address:
        reverb_sampler.check_table_matches(config.replay.address, TRANSITIONS_TABLE,
                                           builder_for(config.agent).signature(spec, config))
        return None, config.replay.address
    server = reverb_tables.make_server([replay_table(config, spec)])
    return server, f"localhost:{server.port}"


def train_online(config: OnlineConfig) -> dict:
    """Runs (or resumes) an online run; returns the final evaluation and where things were written."""
    config.validate()
    builder = builder_for(config.agent)
    spec = builder.spec(env_step_spec(config.env_id, config.observation_indices), config)
    run_dir = os.path.abspath(config.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json())

    state = builder.init(jax.random.PRNGKey(config.seed), spec, config)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), config.learner_fingerprint())
    counters = {"env_steps": 0, "updates": 0}
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        counters = {k: int(meta[k]) for k in counters}
        print(f"Resumed from {ckpt.directory} at update {counters['updates']}, env step {counters['env_steps']}.")

    metrics = MetricsWriter(run_dir)
    eval_policy, eval_state_fn, eval_observe = builder.evaluator(spec, config)
    evaluate = greedy_return_stage(config.env_id, eval_policy, config.eval_episodes, seed=config.seed + 10_000,
                                   actor_state_fn=eval_state_fn, observe=eval_observe,
                                   observation_indices=config.observation_indices)
    curve_path = os.path.join(run_dir, "curve.jsonl")
    curve = [(r["env_steps"], r["return_mean"]) for r in read_jsonl(curve_path)]
    server, address = _connect_replay(config, spec)
    replay = reverb.Client(address)  # one client for priority updates and table queries
    params = LatestParams(builder.network(state))
    progress = Progress(config.progress, config.total_env_steps, counters["env_steps"],
                        desc=f"{config.agent} {config.env_id}")

    def on_env_steps(n):
        counters["env_steps"] += n
        progress.add(n)

    publisher = ParamsPublisher(address) if config.replay.address else None
    if publisher is not None:
        publisher.publish(builder.network(state))
    actor = None
    if config.local_actors:
        actor = ActorThread(config, spec, address, params.get, counters["env_steps"], on_env_steps=on_env_steps)
        actor.start()
    next_eval = _next_multiple(counters["env_steps"], config.eval_every_steps)
    best = {"return_mean": -np.inf}
    started = time.time()
    table_size = None
    try:
        batches = _batches(config, address, actor)
        for i, batch in enumerate(batches):
            if i == 0:
                builder.check_batch(spec, batch["data"])
            data = batch["data"]
            if config.replay.sampler == "prioritized" and config.replay.importance_exponent > 0:
                if counters["updates"] % LOG_EVERY_UPDATES == 0 or table_size is None:
                    table_size = _table_size(replay)
                data = {**data, "weights": importance_weights(batch["probability"], table_size,
                                                              config.replay.importance_exponent)}
            state, m = builder.update(state, data, config)
            counters["updates"] += 1
            params.set(builder.network(state))
            if publisher is not None and counters["updates"] % PUBLISH_EVERY_UPDATES == 0:
                publisher.publish(builder.network(state))
            if config.replay.sampler == "prioritized":
                reverb_sampler.update_priorities(replay, TRANSITIONS_TABLE, batch["key"], builder.priorities(m))
            if counters["updates"] % LOG_EVERY_UPDATES == 0:
                if actor is None:
                    on_env_steps(_inserted(replay) - counters["env_steps"])
                metrics.write(counters["env_steps"], {**m, "updates": counters["updates"],
                                                      "updates_per_s": counters["updates"] / (time.time() - started)},
                              prefix="learner/")
                progress.note(loss=f"{float(m['loss']):.3f}")
            if counters["updates"] % config.checkpoint_every_updates == 0:
                ckpt.save(counters["updates"], state, dict(counters))
            if config.eval_every_steps and counters["env_steps"] >= next_eval:
                result = _evaluate(evaluate, builder.network(state), counters, metrics, curve, curve_path, progress)
                next_eval = _next_multiple(counters["env_steps"], config.eval_every_steps)
                if result["return_mean"] > best["return_mean"]:
                    best = result
                if config.stop_at_return and result["return_mean"] >= config.stop_at_return:
                    break
        if actor is not None:
            actor.check()
        else:
            on_env_steps(_inserted(replay) - counters["env_steps"])
    finally:
        if actor is not None:
            actor.stop_event.set()
        if server is not None:
            server.stop()
        if actor is not None:
            actor.join(timeout=30)
        progress.close()

    ckpt.save(counters["updates"], state, dict(counters))
    final = _evaluate(evaluate, builder.network(state), counters, metrics, curve, curve_path, None)
    png = learning_curve({f"{config.agent} greedy return": curve}, os.path.join(run_dir, "learning_curve.png"),
                         title=f"{config.agent} on {config.env_id}")
    metrics.close()
    ckpt.close()
    summary = {"final_eval": final, "best_eval": best if np.isfinite(best["return_mean"]) else final,
               **counters, "run_dir": run_dir, "checkpoints": ckpt.directory, "learning_curve": png,
               "metrics": metrics.path, "wall_s": round(time.time() - started, 1)}
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _batches(config: OnlineConfig, address: str, actor: ActorThread | None):
    """Sampled batches while actors insert. A sampler that times out (actors blocked, slow to
    start, or finished) is reopened while the local actor lives, or, without one, while the
    remote actors' insert count still grows."""
    inserted = -1
    while True:
        for batch in reverb_sampler.sample_batches(address, TRANSITIONS_TABLE, config.replay.batch_size,
                                                   rate_limiter_timeout_ms=2_000):
            yield batch
        if actor is not None:
            actor.check()
            if not actor.is_alive():
                return
            continue
        now = _inserted(reverb.Client(address))
        if now == inserted and now > 0:
            return
        inserted = now


def importance_weights(probability: np.ndarray, table_size: int, beta: float) -> np.ndarray:
    """Prioritized-replay correction: (N * P(i)) ** -beta normalised by the batch maximum.

    probability [B] (sampling probabilities from Reverb), table_size N -> weights [B] float32 in (0, 1].
    """
    w = (max(table_size, 1) * np.asarray(probability, np.float64)) ** (-beta)
    return (w / w.max()).astype(np.float32)


def _table_size(client) -> int:
    return int(client.server_info()[TRANSITIONS_TABLE].current_size)


def _inserted(client) -> int:
    """Items inserted into the transitions table so far (remote actors' progress)."""
    info = client.server_info()[TRANSITIONS_TABLE]
    return int(info.rate_limiter_info.insert_stats.completed)


def _evaluate(evaluate, network, counters, metrics, curve, curve_path, progress) -> dict:
    result = evaluate(network)
    metrics.write(counters["env_steps"], result, prefix="eval/")
    curve.append((counters["env_steps"], result["return_mean"]))
    with open(curve_path, "a") as f:
        f.write(json.dumps({"env_steps": counters["env_steps"], **result}) + "\n")
    if progress is not None:
        progress.note(eval=f"{result['return_mean']:.0f}")
    return result


def _next_multiple(value: int, period: int) -> int:
    return (value // period + 1) * period if period else np.iinfo(np.int64).max

