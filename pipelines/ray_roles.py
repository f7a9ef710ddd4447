"""The processes of a run on Ray (`rillet launch`, `pipelines.launch`): the replay server, the actors,
the learner and the evaluator, each a Ray actor that Ray places and restarts after a crash. Each role
is a thin shell over what a one-process run uses (`serve_replay`, `act`, `train_online`, the greedy
evaluation): experience still travels through Reverb, parameters through its params tables
(`param_sync`); Ray carries only control calls (start, stop, progress) and restarts the processes.

Every role is created with max_concurrency=2: `run`/`serve` occupies one thread for the life of the
process and the launcher's control calls (`progress`, `stop`, `checkpoint`) use the other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import warnings

import ray

from rillet.errors import RilletError

warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")  # gymnasium Box specs, per process

ACTOR_STEP_BUDGET = 10**15  # actors on Ray act until the launcher stops them (it counts the run's budget)


def _spec_and_template(config):
    """The agent's step spec and a network template of `config` (for the params tables)."""
    from rillet.pipelines.cli import _spec_and_network

    return _spec_and_network(config)


def _free_port() -> int:
    import portpicker

    return portpicker.pick_unused_port()


class _Role:
    def pid(self) -> int:
        """The process id (also: an answer means Ray has the process up)."""
        return os.getpid()


@ray.remote(max_concurrency=2)
class ReplayRole(_Role):
    """The Reverb server: the replay and params tables, checkpointed by Reverb into `checkpoint_dir` on
    the launcher's period. A restarted process (Ray re-runs this constructor) restores the newest
    checkpoint and serves on a new free port; the others find it through `address()`."""

    def __init__(self, config, checkpoint_dir: str):
        from rillet.pipelines.online import TRANSITIONS_TABLE, serve_replay

        spec, template = _spec_and_template(config)
        self._port = _free_port()
        self._server = serve_replay(config, spec, template, port=self._port, checkpoint_dir=checkpoint_dir)
        self._table = TRANSITIONS_TABLE
        self._restored = self.table_info()["size"]

    def address(self) -> str:
        return f"{ray.util.get_node_ip_address()}:{self._port}"

    def serve(self) -> None:
        """Blocks while the server runs (a crash of this process fails the call: the launcher's signal)."""
        self._server.wait()

    def checkpoint(self) -> str:
        """Writes Reverb's checkpoint of every table; returns its path."""
        import reverb

        return reverb.Client(f"127.0.0.1:{self._port}").checkpoint()

    def table_info(self) -> dict:
        """The replay table's own counters: {"size" (items stored), "inserted" (restored counts included),
        "max_size", "sampled"}."""
        import reverb

        info = reverb.Client(f"127.0.0.1:{self._port}").server_info()[self._table]
        return {"size": int(info.current_size), "inserted": int(info.rate_limiter_info.insert_stats.completed),
                "max_size": int(info.max_size), "sampled": int(info.rate_limiter_info.sample_stats.completed)}

    def started(self) -> dict:
        """{"pid", "restored": replay items this process restored from a checkpoint at start}."""
        return {"pid": os.getpid(), "restored": self._restored}


class _ServerWatch:
    """Set (`is_set()`, as a threading.Event) once the actor is stopped or the Reverb server at `address`
    stops answering (checked every `every_s` seconds in a daemon thread): the actor's writes and loop
    end then instead of waiting on a dead server for ever."""

    def __init__(self, address: str, stop: threading.Event, every_s: float = 2.0):
        import reverb

        self._stop, self.lost = stop, threading.Event()
        client = reverb.Client(address)

        def watch():
            while not self._stop.wait(every_s):
                try:
                    client.server_info(timeout=5)
                except Exception:  # any failure to answer: the server is gone (or unreachable)
                    self.lost.set()
                    return

        threading.Thread(target=watch, daemon=True, name="rillet-server-watch").start()

    def is_set(self) -> bool:
        return self._stop.is_set() or self.lost.is_set()


@ray.remote(max_concurrency=2)
class ActorRole(_Role):
    """Actor process j of n: `act` with its slot of the exploration family, writing to the replay
    server and acting with the learner's newest params, until `stop()`. When the server stops answering
    the actor says so, finds the server again through the ReplayRole (a restarted one has a new port),
    waits for it (bounded by replay.connect_timeout_s) and acts on in new episodes."""

    def __init__(self, config, slot: tuple[int, int], replay: ReplayRole):
        self._config, self._slot, self._replay = config, slot, replay
        self._stop = threading.Event()
        self._steps, self._episodes, self._params = 0, [], None
        self._name = f"rillet actor {slot[0]}"

    def run(self, attempt: int) -> int:
        """Acts until stopped; returns the env steps this process took. attempt: the launcher's count of
        this slot's restarts (moves the seeds, so a restarted actor plays new episodes)."""
        from rillet.pipelines.acting import act
        from rillet.pipelines.online import check_remote_replay
        from rillet.pipelines.param_sync import ParamsSubscriber

        config = dataclasses.replace(self._config, total_env_steps=ACTOR_STEP_BUDGET)
        spec, template = _spec_and_template(config)
        seed_offset = 1_000_003 * (self._slot[0] + 1) + 7_919 * attempt
        while not self._stop.is_set():
            address = replay_address(self._replay, config.replay.connect_timeout_s)
            check_remote_replay(dataclasses.replace(config, replay=dataclasses.replace(config.replay, address=address)),
                                spec, self._name)
            self._params = ParamsSubscriber(address, template, config.learner_fingerprint())
            watch = _ServerWatch(address, self._stop)
            try:
                act(config, spec, address, self._params, 0, on_env_steps=self._count, stop=watch,
                    on_episode=self._record, slot=self._slot, seed_offset=seed_offset + self._steps)
            except RilletError:
                raise
            except Exception as e:  # a write or params refresh on a server that went away, or the stop
                if self._stop.is_set():
                    break
                watch.lost.set()
                print(f"{self._name}: {type(e).__name__}: {e}", flush=True)
            if watch.lost.is_set() and not self._stop.is_set():
                print(f"{self._name}: the replay server at {address} stopped answering; finding it again.",
                      flush=True)
        return self._steps

    def _count(self, n: int) -> None:
        self._steps += n

    def _record(self, episode: dict) -> None:
        self._episodes.append(episode)

    def stop(self) -> None:
        self._stop.set()

    def progress(self) -> dict:
        """{"pid", "env_steps", "episodes", "return_sum" (episodes since the last call), "params_step",
        "policy_lag" (learner updates the params were behind when last refreshed)}."""
        episodes, self._episodes = self._episodes, []
        params = self._params
        return {"pid": os.getpid(), "env_steps": self._steps, "episodes": len(episodes),
                "return_sum": float(sum(e["return"] for e in episodes)),
                "params_step": -1 if params is None else params.step,
                "policy_lag": -1 if params is None or params.step < 0 else params.policy_lag}


def replay_address(replay: ReplayRole, timeout_s: float) -> str:
    """The replay server's current address, asked of its role (waiting while Ray restarts it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(replay.address.remote(), timeout=10)
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@ray.remote(max_concurrency=2)
class LearnerRole(_Role):
    """The learner: `train_online` with actors in other processes, on the replay server's address
    (resuming from the run directory's orbax checkpoint, as any run does)."""

    def run(self, config, address: str) -> dict:
        from rillet.pipelines.online import train_online

        replay = dataclasses.replace(config.replay, address=address)
        return train_online(dataclasses.replace(config, replay=replay, local_actors=False, progress=False))


@ray.remote(max_concurrency=2)
class EvaluatorRole(_Role):
    """Greedy evaluation of the newest published params every `every_s` seconds, appended to
    run_dir/evaluations.jsonl with the learner step they come from, until `stop()`."""

    def __init__(self, config, replay: ReplayRole, every_s: float):
        self._config, self._replay, self._every_s = config, replay, every_s
        self._stop = threading.Event()

    def run(self, attempt: int) -> int:
        from rillet.datasets.reverb_tables import wait_for_server
        from rillet.evals.returns import greedy_return_stage
        from rillet.learners.agents import get_agent
        from rillet.pipelines.param_sync import ParamsSubscriber

        config = self._config
        spec, template = _spec_and_template(config)
        agent = get_agent(config.agent)
        parts = agent.evaluator(spec, config.learner, 1)
        evaluate = greedy_return_stage(config.env_id, parts.policy, config.eval_episodes,
                                       seed=config.seed + 10_000 + attempt, observe=parts.observe,
                                       actor_state_fn=lambda n: agent.evaluator(spec, config.learner, n).actor_state,
                                       observation_indices=config.observation_indices)
        done = 0
        while not self._stop.wait(self._every_s if done else 0.0):
            address = replay_address(self._replay, config.replay.connect_timeout_s)
            wait_for_server(address, config.replay.connect_timeout_s, "rillet evaluator")
            params = ParamsSubscriber(address, template, config.learner_fingerprint())
            result = evaluate(params())
            with open(os.path.join(os.path.abspath(config.run_dir), "evaluations.jsonl"), "a") as f:
                f.write(json.dumps({"learner_step": params.step, "time": time.time(), **result}) + "\n")
            done += 1
        return done

    def stop(self) -> None:
        self._stop.set()

