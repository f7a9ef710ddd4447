"""The online runner: EnvPool actors write the agent's replay items into Reverb; the learner stage
samples them; Reverb's rate limiter keeps the two in step. Checkpoints, metrics, progress bar,
periodic and final greedy evaluation, and a learning-curve PNG, all under the run directory.

    result = train_online(OnlineConfig(agent="dqn", env_id="CartPole-v1", run_dir="runs/demo"))

The run is one stage composition (read `_train` top to bottom); it reads only the agent's record.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import reverb

from rillet.actors.environments import env_step_spec
from rillet.actors.episode_stats import summarise_episodes
from rillet.datasets import replay_stage, reverb_sampler, reverb_tables
from rillet.datasets.rlds_finalise import check_out_dir
from rillet.errors import CheckpointError
from rillet.evals.plots import learning_curve
from rillet.evals.returns import greedy_return_stage
from rillet.learners.agents import get_agent
from rillet.pipelines.acting import TRANSITIONS_TABLE, ActorCarry, ActorThread, LatestParams, record_path
from rillet.pipelines.checkpointing import Checkpointer, restore_state
from rillet.pipelines import demonstrations
from rillet.pipelines.config import OnlineConfig
from rillet.pipelines.learning import check_finite, log_metrics, learn, save_checkpoint, skip_non_finite
from rillet.pipelines.run_dir import start_run_dir
from rillet.pipelines.metrics import MetricsWriter, Progress, read_jsonl
from rillet.pipelines.param_sync import ParamsPublisher, params_tables
from rillet.pipelines.stages import Stream, every, last, tap, until
from rillet.pipelines.transfer import (TransferStats, candidate_env_spec, finetune_state, pretrained_loader,
                                       transfer_evaluator, transfer_spec)

LOG_EVERY_UPDATES = 100
DEMO_TABLE_SIZE = 10_000_000  # items: the demonstration table never evicts what a run inserts
PUBLISH_EVERY_UPDATES = 20  # to actors in other processes, through the Reverb "params" table

__all__ = ["train_online", "agent_spec", "load_online_run", "replay_table", "serve_replay"]


def agent_spec(config: OnlineConfig):
    """The StepSpec the agent's actors record in config.env_id (the env's spec plus the agent's extras; with
    behaviour transfer the extended action set and the transfer extras, `pipelines.transfer`)."""
    env_spec = candidate_env_spec(env_step_spec(config.env_id, config.observation_indices), config.transfer)
    return transfer_spec(get_agent(config.agent).spec(env_spec, config.learner), config.transfer)


def replay_table(config: OnlineConfig, spec) -> reverb.Table:
    """The Reverb table an online run writes to and samples from (the agent's replay item)."""
    item = get_agent(config.agent).replay_item(config.learner)
    return replay_stage.replay_table(TRANSITIONS_TABLE, item, spec, config.replay)


def serve_replay(config: OnlineConfig, spec, params_template, port: int | None = None, checkpoint_dir: str = ""):
    """A Reverb server with the replay table and the params tables (for `rillet replay-server`);
    `checkpoint_dir`: Reverb's own table checkpoints there, restored at start when it holds one."""
    tables = [replay_table(config, spec), *params_tables(params_template)]
    return reverb_tables.make_server(tables, port=port, checkpoint_dir=checkpoint_dir)


def load_online_run(run_dir: str, step: int | None = None):
    """(config, agent spec, learner state) of a `rillet train-online` run directory's latest (or given)
    checkpoint; CheckpointError if it is not one or its checkpoint does not fit its config."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            config = OnlineConfig.from_json(json.load(f))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"'{run_dir}' is not a `rillet train-online` run directory ({e!r}).") from None
    agent, spec = get_agent(config.agent), agent_spec(config)
    state = restore_state(os.path.join(run_dir, "checkpoints"), config.learner_fingerprint(),
                          agent.init(jax.random.PRNGKey(config.seed), spec, config.learner), step)
    return config, spec, state


def check_remote_replay(config: OnlineConfig, spec, who: str) -> None:
    """Waits (bounded) for the server at config.replay.address; SpecMismatchError unless its replay
    table holds this agent's items for this environment (before anything is written or sampled)."""
    item = get_agent(config.agent).replay_item(config.learner)
    reverb_tables.wait_for_server(config.replay.address, config.replay.connect_timeout_s, who)
    reverb_sampler.check_table_matches(config.replay.address, TRANSITIONS_TABLE,
                                       replay_stage.item_signature(item, spec))


def _connect_replay(config: OnlineConfig, spec):
    """Returns (server or None, address). Embedded server unless config.replay.address is set, its
    tables seeded with the demonstrations, if any."""
    if config.replay.address:
        check_remote_replay(config, spec, "rillet learner")
        return None, config.replay.address
    tables = [replay_table(config, spec)]
    if config.replay.demo_fraction > 0:
        item = get_agent(config.agent).replay_item(config.learner)
        tables.append(demonstrations.demo_table(replay_stage.item_signature(item, spec), DEMO_TABLE_SIZE))
    server = reverb_tables.make_server(tables)
    print(f"Replay: an embedded Reverb server on port {server.port}, which Reverb opens on every network interface "
          "with no authentication; fence the port from other machines (README, \"Fence the replay server\").",
          flush=True)
    _seed_replay(config, f"127.0.0.1:{server.port}")
    return server, f"127.0.0.1:{server.port}"


def _seed_replay(config: OnlineConfig, address: str) -> None:
    """Inserts the demonstration datasets' items (`pipelines.demonstrations`) before the actors start."""
    replay = config.replay
    if not replay.demonstrations:
        return
    table = demonstrations.DEMO_TABLE if replay.demo_fraction > 0 else TRANSITIONS_TABLE
    count = demonstrations.insert_demonstrations(address, table, replay.demonstrations, config.agent,
                                                 config.learner, replay, config.gamma)
    print(f"Seeded the {table!r} table with {count} items from {list(replay.demonstrations)}.")


class _Run:
    """The state of one run that the stages share: counters, the curve, the stop flag."""

    def __init__(self, config: OnlineConfig, run_dir: str, env_steps: int, updates: int, carry: ActorCarry):
        self.config, self.run_dir = config, run_dir
        self.carry = carry  # the local actors' state that outlives episodes (checkpointed)
        self.env_steps, self.updates = env_steps, updates
        self.curve_path = os.path.join(run_dir, "curve.jsonl")
        self.curve = [(r["env_steps"], r["return_mean"]) for r in read_jsonl(self.curve_path)]
        self.best = {"return_mean": -np.inf}
        self.stop = False
        self.skipped = 0  # sampled batches with NaN or inf, not learned from
        self.started = time.time()
        self.episodes: list[dict] = []  # the local actors' finished episodes since the last log
        self.episode_log = os.path.join(run_dir, "episodes.jsonl")
        self.transfer_stats = TransferStats() if config.transfer.enabled else None  # flight/candidate fractions

    def record_episode(self, stats: dict) -> None:
        """Keeps a finished episode for the next log, and appends it to episodes.jsonl with the env step
        count (one line per episode of the local actors, in the order they ended; kept across resumes)."""
        self.episodes.append(stats)
        with open(self.episode_log, "a") as f:
            f.write(json.dumps({"env_steps": self.env_steps, **stats}) + "\n")

    def count_skipped(self, skipped: int) -> None:
        """A sampled batch held a NaN or inf and was not learned from (said once, then counted in the logs)."""
        if skipped == 1:
            print("rillet learner: a sampled batch holds NaN or inf (rewards or observations from the environment?); "
                  "such batches are skipped and counted (learner/non_finite_batches_skipped).", flush=True)
        self.skipped = skipped

    def counters(self) -> dict:
        return {"env_steps": self.env_steps, "updates": self.updates}


def train_online(config: OnlineConfig) -> dict:
    """Runs (or resumes) an online run; returns the final evaluation and where things were written."""
    config.validate()
    agent = get_agent(config.agent)
    spec = agent_spec(config)
    env_spec = env_step_spec(config.env_id, config.observation_indices)
    pretrained = pretrained_loader(config.transfer, env_spec)  # a bad pre-trained run is refused here
    run_dir = os.path.abspath(config.run_dir)
    start_run_dir(run_dir, config.to_json())  # a resume with other settings is refused before any write
    state = agent.init(jax.random.PRNGKey(config.seed), spec, config.learner)
    ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), config.learner_fingerprint())
    env_steps = updates = 0
    carry = ActorCarry()
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state)
        env_steps, updates = int(meta["env_steps"]), int(meta["updates"])
        carry = ActorCarry(ckpt.restore_actor())
        print(f"Resumed from {ckpt.directory} at update {updates}, env step {env_steps}.")
    elif config.transfer.finetune:
        state = finetune_state(state, config.agent, config.transfer)
    if config.record_dir and config.local_actors:  # refused now, not by the actor thread later
        check_out_dir(record_path(config.record_dir, env_steps), "--record-dir")
    run = _Run(config, run_dir, env_steps, updates, carry)
    metrics = MetricsWriter(run_dir)

    def evaluator(num_envs):  # greedy, over the extended action set where transfer's mode includes exploit
        parts = agent.evaluator(spec, config.learner, num_envs)
        return transfer_evaluator(config.transfer, parts, pretrained, env_spec, num_envs)

    parts = evaluator(1)

    def eval_state(num_envs):  # the evaluator's state, from the actors' carry where it reads one
        return run.carry.evaluation_state(evaluator(num_envs))

    evaluate = greedy_return_stage(config.env_id, parts.policy, config.eval_episodes, seed=config.seed + 10_000,
                                   actor_state_fn=eval_state,
                                   observe=parts.observe, observation_indices=config.observation_indices)
    state = _train(run, agent, spec, state, ckpt, metrics, evaluate)
    check_finite(state, run.updates, ckpt)
    ckpt.save(run.updates, state, run.counters(), actor=run.carry.latest)
    final = _evaluate(run, evaluate, agent.network(state), metrics, None)
    png = learning_curve({f"{config.agent} greedy return": run.curve}, os.path.join(run_dir, "learning_curve.png"),
                         title=f"{config.agent} on {config.env_id}")
    metrics.close()
    ckpt.close()
    summary = {"final_eval": final, "best_eval": run.best if np.isfinite(run.best["return_mean"]) else final,
               **run.counters(), "run_dir": run_dir, "checkpoints": ckpt.directory, "learning_curve": png,
               "metrics": metrics.path, "wall_s": round(time.time() - run.started, 1)}
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _train(run: _Run, agent, spec, state, ckpt, metrics, evaluate):
    """Actors and replay up, the learner's stage composition drained, actors and replay down.
    Returns the final learner state."""
    config = run.config
    server, address = _connect_replay(config, spec)
    client = reverb.Client(address)  # one client for priority updates and table queries
    params = LatestParams(agent.network(state))
    progress = Progress(config.progress, config.total_env_steps, run.env_steps, desc=f"{config.agent} {config.env_id}")
    publisher = ParamsPublisher(address, config.learner_fingerprint()) if config.replay.address else None
    if publisher is not None:
        publisher.publish(agent.network(state), run.updates)
    actor = _start_actor(run, spec, address, params, progress) if config.local_actors else None

    def remote_progress(tick=None):
        if actor is None:  # actors in other processes: their steps, from the table's counters
            kind = agent.replay_item(config.learner).kind
            n = max(0, replay_stage.actor_env_steps(client, TRANSITIONS_TABLE, kind, config.replay.sequence_period)
                    - run.env_steps)  # (a server restored from an older checkpoint counts from there)
            run.env_steps += n
            progress.add(n)

    def log(tick):
        check_finite(tick.state, tick.step, ckpt)  # a diverged learner stops here, its NaNs never checkpointed
        remote_progress()
        log_metrics(metrics, "learner/", lambda t: run.env_steps,
                    lambda t: {"updates": t.step, "updates_per_s": t.step / (time.time() - run.started),
                               "non_finite_batches_skipped": run.skipped})(tick)
        episodes, run.episodes = run.episodes, []
        if episodes:
            metrics.write(run.env_steps, summarise_episodes(episodes), prefix="actor/")
        carried = {**run.carry.metrics(), **(run.transfer_stats.take() if run.transfer_stats else {})}
        if carried:
            metrics.write(run.env_steps, carried, prefix="actor/")
        progress.note(loss=f"{float(tick.metrics['loss']):.3f}")

    def periodic_eval(tick):
        _evaluate(run, evaluate, agent.network(tick.state), metrics, progress)
        recent = [r for _, r in run.curve[-config.stop_after_evals:]]
        run.stop = bool(config.stop_at_return and len(recent) == config.stop_after_evals
                        and min(recent) >= config.stop_at_return)

    stream = (_learner_ticks(run, agent, spec, state, address, client, actor)
              | tap(lambda tick: _advance(run, params, agent, tick))
              | every(PUBLISH_EVERY_UPDATES if publisher else 0,
                      lambda t: publisher.publish(agent.network(t.state), t.step),
                      start=run.updates)
              | every(LOG_EVERY_UPDATES, log, start=run.updates)
              | every(config.checkpoint_every_updates,
                      save_checkpoint(ckpt, lambda t: run.counters(), actor=lambda: run.carry.latest),
                      start=run.updates)
              | every(config.eval_every_steps, periodic_eval, count=lambda t: run.env_steps, start=run.env_steps)
              | until(lambda tick: run.stop))
    try:
        final = last(stream)
        if actor is not None:
            actor.check()
        remote_progress()
    finally:
        _shut_down(actor, server, progress)
    return state if final is None else final.state


def _shut_down(actor: ActorThread | None, server, progress) -> None:
    """Stops the local actors, then the embedded replay server, then waits for the actors (bounded)."""
    if actor is not None:
        actor.stop_event.set()
    if server is not None:
        server.stop()
    if actor is not None:
        actor.join(timeout=30)
    progress.close()


def _start_actor(run: _Run, spec, address: str, params: LatestParams, progress) -> ActorThread:
    """The local actors, in a thread, acting with the newest parameters and counting env steps."""
    def on_env_steps(n):
        run.env_steps += n
        progress.add(n)

    actor = ActorThread(run.config, spec, address, params.get, run.env_steps, on_env_steps=on_env_steps,
                        on_episode=run.record_episode, carry=run.carry,
                        on_step=run.transfer_stats.add if run.transfer_stats else None)
    actor.start()
    return actor


def _learner_ticks(run: _Run, agent, spec, state, address: str, client, actor: ActorThread | None) -> Stream:
    """Replay -> (importance weights) -> learner -> (priority updates): the ticks of the learner stage."""
    config = run.config

    def keep_sampling():
        if actor is None:
            return None  # actors in other processes: sample while the table's insert count grows
        actor.check()
        return actor.is_alive()

    prioritized = config.replay.sampler == "prioritized"
    demo_rows = demonstrations.demo_batch_size(config.replay.batch_size, config.replay.demo_fraction)
    batches = replay_stage.sampled_batches(address, TRANSITIONS_TABLE, config.replay.batch_size - demo_rows,
                                           keep_sampling)
    if demo_rows:
        batches = demonstrations.mixed_batches(batches, address, demo_rows)
    stream = (Stream(batches) | _checked_first(lambda batch: agent.check_batch(spec, batch["data"]))
              | skip_non_finite(lambda batch: batch["data"], run.count_skipped))
    if prioritized and config.replay.importance_exponent > 0:
        weighted = replay_stage.importance_weighted(client, TRANSITIONS_TABLE, config.replay.importance_exponent)
        stream = stream | (demonstrations.replay_rows(weighted) if demo_rows else weighted)
    stream = stream | learn(agent.update, state, config.learner, start=run.updates, data=lambda b: b["data"])
    if demo_rows:
        stream = stream | tap(lambda tick: tick.metrics.update(demo_fraction=float(np.mean(tick.batch["demo"]))))
    if prioritized:
        stream = stream | replay_stage.updated_priorities(client, TRANSITIONS_TABLE)
    return stream


def _advance(run: _Run, params: LatestParams, agent, tick) -> None:
    """After each update: the run's update count, and the newest parameters for the local actors."""
    run.updates = tick.step
    params.set(agent.network(tick.state))


def _checked_first(check):
    """Transform: calls check(item) on the first item only (the learner's batch spec check)."""

    def stage(it):
        for i, item in enumerate(it):
            if i == 0:
                check(item)
            yield item

    return stage


def _evaluate(run: _Run, evaluate, network, metrics, progress) -> dict:
    result = evaluate(network)
    metrics.write(run.env_steps, result, prefix="eval/")
    run.curve.append((run.env_steps, result["return_mean"]))
    with open(run.curve_path, "a") as f:
        f.write(json.dumps({"env_steps": run.env_steps, **result}) + "\n")
    if progress is not None:
        progress.note(eval=f"{result['return_mean']:.0f}")
    if result["return_mean"] > run.best["return_mean"]:
        run.best = result
    return result
