"""`rillet launch AGENT ...`: one online run on Ray. Ray places and restarts the processes (one Reverb
server, N actor processes, the learner, an evaluator; `pipelines.ray_roles`), Reverb carries the
experience and the params, and this process supervises: it counts the run's env steps over the
actors, stops them at the budget, checkpoints the replay tables on a period, and restarts what died.

    rillet launch dqn --env-id CartPole-v1 --total-env-steps 50000 --ray.num-actors 2 --run-dir runs/x
    rillet launch r2d2 ... --ray.address auto          # an existing cluster instead of a local instance

A process that dies is restarted by Ray (the same constructor arguments: an actor keeps its slot of
the exploration family) and its task resubmitted here, at most `max_restarts` times per role; a
restarted replay server restores its tables from Reverb's last checkpoint; a restarted learner resumes
from its orbax checkpoint. The run ends with a summary of restarts (launch_summary.json).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import time

from rillet.errors import ConfigError, RilletError
from rillet.pipelines.config import OnlineConfig
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.run_dir import start_run_dir

__all__ = ["RayConfig", "launch", "LaunchError"]


class LaunchError(RilletError, RuntimeError):
    """A role of a Ray run failed more often than its restart allowance."""


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """Where the run's processes go, what each may use, and how failures are handled."""

    address: str = ""
    """An existing Ray cluster ("auto" or host:port); empty: a local Ray instance on 127.0.0.1."""
    num_actors: int = 2
    """Actor processes (each runs --actor.num-envs environments)."""
    actor_cpus: float = 1.0
    learner_cpus: float = 1.0
    learner_gpus: float = -1.0
    """-1: one GPU if the cluster has one, else none."""
    replay_cpus: float = 0.5
    max_restarts: int = 5
    """Restarts allowed per role process before the run stops with LaunchError."""
    replay_checkpoint_every_s: float = 30.0
    """Reverb checkpoints of the replay tables (what a restarted server restores)."""
    eval_every_s: float = 60.0
    """The evaluator's period (greedy episodes on the newest params); 0: no evaluator process."""
    log_every_s: float = 5.0
    act_for_s: float = 0.0
    """Also stop acting after this many seconds of the launch (a wall-clock budget); 0: the env-step budget only."""

    def cpus(self) -> float:
        """The CPUs the roles ask Ray for, all together."""
        return self.replay_cpus + self.num_actors * self.actor_cpus + self.learner_cpus

    def validate(self) -> "RayConfig":
        def need(ok, field, value, rule):
            if not ok:
                raise ConfigError(f"ray.{field}={value!r} is invalid: it must be {rule}. Fix --ray.{field}.")

        need(1 <= self.num_actors <= 10_000, "num-actors", self.num_actors, "in [1, 10000]")
        for name in ("actor_cpus", "learner_cpus", "replay_cpus"):
            need(0 <= getattr(self, name) <= 1024, name.replace("_", "-"), getattr(self, name), "in [0, 1024]")
        need(self.learner_gpus == -1 or 0 <= self.learner_gpus <= 64, "learner-gpus", self.learner_gpus,
             "-1 (auto) or in [0, 64]")
        need(0 <= self.max_restarts <= 1000, "max-restarts", self.max_restarts, "in [0, 1000]")
        need(1 <= self.replay_checkpoint_every_s <= 86_400, "replay-checkpoint-every-s",
             self.replay_checkpoint_every_s, "in [1, 86400]")
        need(0 <= self.eval_every_s <= 86_400, "eval-every-s", self.eval_every_s, "in [0, 86400]")
        need(0.1 <= self.log_every_s <= 3600, "log-every-s", self.log_every_s, "in [0.1, 3600]")
        need(0 <= self.act_for_s <= 10**7, "act-for-s", self.act_for_s, "in [0, 1e7] seconds")
        return self


def init_ray(config: RayConfig) -> bool:
    """Connects to config.address, or starts a local Ray instance bound to 127.0.0.1 (Ray's single-node
    mode: every Ray service and worker listens on the loopback address only) with at least the CPUs the
    roles ask for (on one machine they share its cores). Returns whether it started one."""
    if not config.address:  # loopback only; Ray reads it when first imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if config.address:
        ray.init(address=config.address, log_to_driver=True)
        return False
    ray.init(include_dashboard=False, log_to_driver=True, num_cpus=max(os.cpu_count() or 1, math.ceil(config.cpus())))
    return True


def launch(config: OnlineConfig, ray_config: RayConfig) -> dict:
    """Runs (or resumes) `config` on Ray; returns the learner's summary with the launch's counters."""
    config.validate()
    ray_config.validate()
    if config.replay.samples_per_insert <= 0:
        raise ConfigError("rillet launch needs --replay.samples-per-insert > 0: the learner ends when the rate "
                          "limiter stops it and the actors insert no more (with 0 it would sample for ever).")
    if config.replay.address or config.replay.demonstrations:
        raise ConfigError("rillet launch starts its own replay server: drop --replay.address and "
                          "--replay.demonstrations.")
    run_dir = os.path.abspath(config.run_dir)
    config = dataclasses.replace(config, run_dir=run_dir, progress=False,
                                 eval_every_steps=0 if ray_config.eval_every_s else config.eval_every_steps)
    start_run_dir(run_dir, config.to_json())  # refuses another run's directory before anything starts
    started = init_ray(ray_config)
    supervisor = None
    try:
        supervisor = _Supervisor(config, ray_config)
        summary = supervisor.run()
    finally:
        if supervisor is not None:
            supervisor.shut_down()
        if started:
            import ray

            ray.shutdown()
    with open(os.path.join(run_dir, "launch_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


class _Supervisor:
    """The roles of one run, their tasks, and the counters of the launch."""

    def __init__(self, config: OnlineConfig, ray_config: RayConfig):
        import ray

        from rillet.pipelines import ray_roles

        self.config, self.ray_config = config, ray_config
        self.restarts: collections.Counter = collections.Counter()
        self.restored: list[int] = []
        self.tasks: dict = {}  # object ref -> (role name, index)
        self.env_steps_before: dict[int, int] = collections.defaultdict(int)  # steps of dead actor processes
        self.last_progress: dict[int, dict] = {}
        self.log_path = os.path.join(config.run_dir, "launch.jsonl")
        earlier = read_jsonl(self.log_path)  # a launch resumed in its run directory goes on from its count
        self.env_steps_before[-1] = int(earlier[-1]["env_steps"]) if earlier else 0
        keep = dict(max_restarts=ray_config.max_restarts)
        gpus = ray_config.learner_gpus if ray_config.learner_gpus >= 0 else \
            (1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0)
        self.replay = ray_roles.ReplayRole.options(num_cpus=ray_config.replay_cpus, **keep).remote(
            config, os.path.join(config.run_dir, "replay_checkpoints"))
        self.replay_started = ray.get(self.replay.started.remote())
        if self.replay_started["restored"]:
            self.restored.append(self.replay_started["restored"])
        n = ray_config.num_actors
        self.actors = [ray_roles.ActorRole.options(num_cpus=ray_config.actor_cpus, **keep).remote(
            config, (j, n), self.replay) for j in range(n)]
        self.learner = ray_roles.LearnerRole.options(num_cpus=ray_config.learner_cpus, num_gpus=gpus, **keep).remote()
        self.evaluator = None
        if ray_config.eval_every_s:
            self.evaluator = ray_roles.EvaluatorRole.options(num_cpus=0, **keep).remote(
                config, self.replay, ray_config.eval_every_s)
        self._submit("replay", 0)
        for j in range(n):
            self._submit("actor", j)
        self._submit("learner", 0)
        if self.evaluator is not None:
            self._submit("evaluator", 0)
        print(f"rillet launch: {n} actor processes, a learner ({gpus:g} GPU), a replay server"
              f"{' and an evaluator' if self.evaluator else ''} on Ray; run directory {config.run_dir}", flush=True)

    def _handle(self, role: str, index: int):
        return {"replay": self.replay, "actor": self.actors[index] if role == "actor" else None,
                "learner": self.learner, "evaluator": self.evaluator}[role]

    def _await_alive(self, role: str, index: int) -> None:
        """Waits until Ray has restarted the role's process (it answers a call); LaunchError after
        replay.connect_timeout_s."""
        import ray

        deadline = time.monotonic() + self.config.replay.connect_timeout_s
        while True:
            try:
                ray.get(self._handle(role, index).pid.remote(), timeout=10)
                return
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise LaunchError(f"Ray did not restart the {role} {index} within "
                                      f"{self.config.replay.connect_timeout_s:.0f} s.") from None
                time.sleep(0.5)

    def _submit(self, role: str, index: int) -> None:
        """Starts (again) the long task of a role; its ref failing is how a dead process shows."""
        attempt = self.restarts[(role, index)]
        if role == "replay":
            ref = self.replay.serve.remote()
        elif role == "actor":
            ref = self.actors[index].run.remote(attempt)
        elif role == "learner":  # waits while Ray restarts the server (the learner may see it die first)
            from rillet.pipelines.ray_roles import replay_address

            address = replay_address(self.replay, self.config.replay.connect_timeout_s)
            ref = self.learner.run.remote(self.config, address)
        else:
            ref = self.evaluator.run.remote(attempt)
        self.tasks[ref] = (role, index)

    def run(self) -> dict:
        """Supervises until the learner's run ends; returns its summary with the launch's counters."""
        import ray

        started = last_log = last_ckpt = time.time()
        stopping, result = False, None
        while result is None:
            ready, _ = ray.wait(list(self.tasks), num_returns=1, timeout=1.0)
            for ref in ready:
                role, index = self.tasks.pop(ref)
                try:
                    value = ray.get(ref)
                except (ray.exceptions.RayError, RilletError) as e:
                    self._restart(role, index, e)
                    continue
                if role == "learner":
                    result = value
            now = time.time()
            if now - last_ckpt >= self.ray_config.replay_checkpoint_every_s:
                self._checkpoint_replay()
                last_ckpt = now
            steps = self._poll_actors()
            out_of_time = self.ray_config.act_for_s and now - started >= self.ray_config.act_for_s
            if not stopping and (steps >= self.config.total_env_steps or out_of_time):
                self._stop_actors()
                stopping = True
            if now - last_log >= self.ray_config.log_every_s or result is not None:
                self._log(now - started)
                last_log = now
        table = ray.get(self.replay.table_info.remote(), timeout=60)
        return {**result, "env_steps_actors": self._env_steps(), "restarts": self._restart_counts(),
                "replay_items_restored": self.restored, "replay_table": table,
                "wall_s_launch": round(time.time() - started, 1)}

    def _restart(self, role: str, index: int, error: BaseException) -> None:
        """Counts a failed role task and resubmits it (Ray restarts the process itself); LaunchError past
        the allowance, or at once for a rillet error (bad input does not heal by restarting)."""
        import ray

        key = (role, index)
        self.restarts[key] += 1
        cause = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        if isinstance(error, RilletError) or self.restarts[key] > self.ray_config.max_restarts:
            raise LaunchError(f"the {role} {index} failed {self.restarts[key]} time(s), the last with {cause}; "
                              f"see {self.config.run_dir} and Ray's logs (/tmp/ray/session_latest/logs).") from error
        print(f"rillet launch: the {role} {index} stopped ({cause}); restart {self.restarts[key]} of at most "
              f"{self.ray_config.max_restarts}.", flush=True)
        if role == "actor":  # its steps so far still count towards the budget
            self.env_steps_before[index] += self.last_progress.pop(index, {}).get("env_steps", 0)
        self._await_alive(role, index)
        if role == "replay":
            started = ray.get(self.replay.started.remote(), timeout=self.config.replay.connect_timeout_s)
            self.restored.append(started["restored"])
            print(f"rillet launch: the replay server restarted (pid {started['pid']}) with {started['restored']} "
                  "items restored from its last checkpoint; restarting the learner on it (it resumes from its "
                  "checkpoint; the actors find the server by themselves).", flush=True)
            ray.kill(self.learner, no_restart=False)  # its sampler would wait on the dead server for ever
        self._submit(role, index)

    def _checkpoint_replay(self) -> None:
        import ray

        try:
            ray.get(self.replay.checkpoint.remote(), timeout=60)
        except ray.exceptions.RayError as e:  # a server down now: its restart shows as a failed task
            print(f"rillet launch: replay checkpoint skipped ({type(e).__name__}).", flush=True)

    def _env_steps(self) -> int:
        return sum(self.env_steps_before.values()) + sum(p["env_steps"] for p in self.last_progress.values())

    def _poll_actors(self) -> int:
        """The actors' progress (kept until the next poll; episodes accumulate); returns the run's env steps."""
        import ray

        for j, actor in enumerate(self.actors):
            try:
                new = ray.get(actor.progress.remote(), timeout=10)
            except ray.exceptions.RayError:
                continue  # restarting: its task's failure is handled by run()
            old = self.last_progress.get(j, {"episodes": 0, "return_sum": 0.0})
            new["episodes"] += old["episodes"]
            new["return_sum"] += old["return_sum"]
            self.last_progress[j] = new
        return self._env_steps()

    def _log(self, elapsed: float) -> None:
        """Appends one line to launch.jsonl: env steps, their rate, policy lag, returns since the last line."""
        steps = self._env_steps()
        lags = [p["policy_lag"] for p in self.last_progress.values() if p["policy_lag"] >= 0]
        episodes = sum(p["episodes"] for p in self.last_progress.values())
        returns = sum(p["return_sum"] for p in self.last_progress.values())
        line = {"time_s": round(elapsed, 1), "env_steps": steps, "env_steps_per_s": steps / max(elapsed, 1e-9),
                "policy_lag_mean": float(sum(lags) / len(lags)) if lags else None,
                "params_step_min": min((p["params_step"] for p in self.last_progress.values()), default=-1),
                "episodes": episodes, "episode_return_mean": returns / episodes if episodes else None,
                "restarts": sum(self.restarts.values())}
        for p in self.last_progress.values():
            p["episodes"], p["return_sum"] = 0, 0.0
        with open(self.log_path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def _stop_actors(self) -> None:
        import ray

        stops = [a.stop.remote() for a in self.actors]
        if self.evaluator is not None:
            stops.append(self.evaluator.stop.remote())
        ray.wait(stops, num_returns=len(stops), timeout=30)

    def _restart_counts(self) -> dict:
        counts = collections.Counter()
        for (role, _), n in self.restarts.items():
            counts[role] += n
        return {role: counts.get(role, 0) for role in ("replay", "actor", "learner", "evaluator")}

    def shut_down(self) -> None:
        """Ends every role process (their state is in the run directory: checkpoints and logs)."""
        import ray

        for handle in [*self.actors, self.learner, self.evaluator, self.replay]:
            if handle is not None:
                ray.kill(handle, no_restart=True)
