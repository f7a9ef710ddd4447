"""Writers that turn the actor's batched steps into per-environment Reverb items.

Input, once per tick: a batched RLDS step ``{"observation": [B, *obs], "action": [B, *act],
"reward": [B], "discount": [B], "is_first": [B], "is_last": [B], "is_terminal": [B],
"extras": {name: [B, ...]}}`` (see `rillet.datasets.specs`). Each of the B environments gets
its own `reverb.TrajectoryWriter`, so history indices equal episode step indices and
`end_episode` after an env's last step never disturbs the other environments' buffers.

* `NStepTransitionWriter`: items match `transition_signature(spec)`.
* `SequenceWriter`: items match `sequence_signature(spec, length)`.
* `reverb_writer(writer)`: a pipeline stage that writes each tick and passes it on.

Items never cross an episode boundary. Episodes still running at `close()` contribute only the
items already complete. A step with is_first in the middle of an env's episode (a manual reset)
abandons that episode's pending items (counted in ``episodes_abandoned``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import numpy as np
import reverb

from rillet.datasets.nstep import check_nstep_args, discounted_sum
from rillet.datasets.specs import StepSpec, check_batch
from rillet.errors import ConfigError, SpecMismatchError


WAIT_SLICE_MS = 250  # blocked inserts look at the stop signal this often


class WriterStopped(Exception):
    """A write blocked by the replay's rate limiter gave up because the writer's stop signal was set."""


def as_client(client_or_address: reverb.Client | str) -> reverb.Client:
    """A reverb.Client from a client or a "host:port" address."""
    if isinstance(client_or_address, reverb.Client):
        return client_or_address
    if isinstance(client_or_address, str) and client_or_address:
        return reverb.Client(client_or_address)
    raise ConfigError(f"expected a reverb.Client or a 'host:port' address, got {client_or_address!r}.")


def validate_step(spec: StepSpec, step: Mapping[str, Any]) -> int:
    """Checks a batched step against `spec`; returns B (raises SpecMismatchError)."""
    check_batch(spec.fields(), step, leading_dims=1, what="actor step")
    sizes = {k: np.shape(v)[0] for k, v in step.items() if k != "extras"}
    sizes.update({f"extras/{k}": np.shape(v)[0] for k, v in step["extras"].items()})
    if len(set(sizes.values())) != 1:
        raise SpecMismatchError(
            f"actor step: fields disagree on the number of environments B (leading axis): {sizes}. "
            "Every field must be batched over the same environments."
        )
    return next(iter(sizes.values()))


class _BatchedWriter:
    """Shared plumbing: validation, dtype casting, one TrajectoryWriter per environment."""

    def __init__(self, client_or_address, table: str, spec: StepSpec, priority: float,
                 keep_alive: int, max_in_flight_items: int):
        if not np.isfinite(priority) or priority < 0:
            raise ConfigError(f"priority must be finite and >= 0, got {priority!r}.")
        if max_in_flight_items < 0:
            raise ConfigError(f"max_in_flight_items must be >= 0, got {max_in_flight_items!r}.")
        self.client = as_client(client_or_address)
        self.table = table
        self.spec = spec
        self.priority = float(priority)
        self.items_written = 0  # items handed to Reverb so far (for metrics)
        self.episodes_abandoned = 0
        self._keep_alive = keep_alive
        self._max_in_flight = max_in_flight_items
        self._num_envs: int | None = None
        self._writers: list[reverb.TrajectoryWriter] = []
        self._step = np.zeros(0, np.int64)  # episode step index of each env's next step, -1: none
        self._is_stopped: Callable[[], bool] = lambda: False

    def stop_on(self, is_stopped: Callable[[], bool]) -> None:
        """Writes blocked by the rate limiter raise WriterStopped once is_stopped() is true (checked
        every WAIT_SLICE_MS); without it they wait as long as the server makes them."""
        self._is_stopped = is_stopped

    def _flush(self, writer: reverb.TrajectoryWriter, keep_in_flight: int = 0) -> None:
        """Waits until at most keep_in_flight of writer's items await the server, in WAIT_SLICE_MS
        slices; raises WriterStopped if the stop signal is set while the rate limiter holds them."""
        while True:
            try:
                return writer.flush(keep_in_flight, timeout_ms=WAIT_SLICE_MS)
            except reverb.errors.DeadlineExceededError:
                if self._is_stopped():
                    raise WriterStopped("the actor was stopped while the replay's rate limiter held it") from None

    def _end_episode(self, i: int) -> None:
        """Ends env i's episode (clearing its buffers) once its items are in (see `_flush`).
        (Its items are flushed first: `end_episode` itself, interrupted, would leave its columns stale.)"""
        self._flush(self._writers[i])
        self._writers[i].end_episode(clear_buffers=True)

    @property
    def num_envs(self) -> int | None:
        return self._num_envs

    def write(self, batched_step: Mapping[str, Any]) -> None:
        """Appends one tick ([B, ...] arrays) and inserts every item it completes."""
        if self._num_envs is None:
            self._num_envs = validate_step(self.spec, batched_step)
            self._writers = [self.client.trajectory_writer(self._keep_alive) for _ in range(self._num_envs)]
            self._step = np.full(self._num_envs, -1, np.int64)
            self._init_envs(self._num_envs)
        step = self._cast(batched_step)
        if step["is_first"].shape[0] != self._num_envs:
            raise SpecMismatchError(
                f"actor step has B={step['is_first'].shape[0]} environments but this writer was "
                f"started with B={self._num_envs}; use one writer per actor (EnvPool batch)."
            )
        for i in range(self._num_envs):
            first, last = bool(step["is_first"][i]), bool(step["is_last"][i])
            if first:
                if self._step[i] >= 0:  # manual reset mid-episode: drop what is pending
                    self.episodes_abandoned += 1
                    self._end_episode(i)
                self._step[i] = 0
                self._reset_env(i)
            elif self._step[i] < 0:
                raise SpecMismatchError(
                    f"actor step: env {i} continues an episode this writer never saw start "
                    "(is_first=False). Start writing at the tick right after env.reset()."
                )
            before = self.items_written
            self._write_env(i, int(self._step[i]), last, step)
            if last:
                self._end_episode(i)
                self._step[i] = -1
            else:
                self._step[i] += 1
                if self.items_written > before:
                    self._flush(self._writers[i], self._max_in_flight)

    def _cast(self, step: Mapping[str, Any]) -> dict[str, Any]:
        fields = self.spec.fields()
        out = {k: np.asarray(step[k], fields[k].np_dtype) for k in fields if k != "extras"}
        out["extras"] = {k: np.asarray(step["extras"][k], s.np_dtype) for k, s in fields["extras"].items()}
        return out

    def _create(self, i: int, item: Any) -> None:
        self._writers[i].create_item(self.table, self.priority, item)
        self.items_written += 1

    def flush(self) -> None:
        """Blocks until every created item has been confirmed by the server (see `stop_on`)."""
        for w in self._writers:
            self._flush(w)

    def close(self) -> None:
        """Flushes and closes all per-environment writers (pending partial items are dropped; after
        the stop signal, items the rate limiter still holds back are dropped too)."""
        for w in self._writers:
            try:
                self._flush(w)
            except WriterStopped:
                pass
            w.close()
        self._writers = []
        self._num_envs = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Subclass hooks.
    def _init_envs(self, num_envs: int) -> None: ...
    def _reset_env(self, i: int) -> None: ...
    def _write_env(self, i: int, t: int, last: bool, step: dict[str, Any]) -> None: ...


class NStepTransitionWriter(_BatchedWriter):
    """Writes n-step transitions (o_t, a_t, R_t, D_t, o_{t+m}, extras_t) for every non-last step t.

    The transition of start t is inserted at step t+n, or at the episode's last step T with the
    window truncated to m = T - t (the arithmetic is `nstep.discounted_sum`). R_t and D_t are appended as
    extra columns ("nstep") of the step that completes them; the starts left at an episode's end
    get one scalar-only append each, so every item references its data without copies.
    """

    def __init__(self, client_or_address, table: str, spec: StepSpec, n: int, gamma: float,
                 priority: float = 1.0, max_in_flight_items: int = 16):
        check_nstep_args(n, gamma, "NStepTransitionWriter")
        super().__init__(client_or_address, table, spec, priority, n + 2, max_in_flight_items)
        self.n, self.gamma = int(n), float(gamma)

    def _init_envs(self, num_envs: int) -> None:
        self._rewards = [[] for _ in range(num_envs)]  # rewards of the last <= n steps
        self._factors = [[] for _ in range(num_envs)]  # gamma * their env discounts

    def _reset_env(self, i: int) -> None:
        self._rewards[i].clear()
        self._factors[i].clear()

    def _item(self, i: int, start: int, scalar_index: int, next_index: int) -> dict[str, Any]:
        h = self._writers[i].history
        return {
            "observation": h["observation"][start],
            "action": h["action"][start],
            "reward": h["nstep"]["reward"][scalar_index],
            "discount": h["nstep"]["discount"][scalar_index],
            "next_observation": h["observation"][next_index],
            "extras": {k: h["extras"][k][start] for k in self.spec.extras},
        }

    def _write_env(self, i: int, t: int, last: bool, step: dict[str, Any]) -> None:
        rewards, factors = self._rewards[i], self._factors[i]
        data = {
            "observation": step["observation"][i],
            "action": step["action"][i],
            "extras": {k: v[i] for k, v in step["extras"].items()},
        }
        first_start = t - len(rewards)  # oldest step still waiting for its transition
        if last:  # every pending start, its window cut at the episode's end
            targets = [discounted_sum(rewards[k:], factors[k:]) for k in range(len(rewards))]
        elif len(rewards) == self.n:
            targets = [discounted_sum(rewards, factors)]
        else:
            targets = []
        writer = self._writers[i]
        for k, (ret, tot) in enumerate(targets):
            scalars = {"nstep": {"reward": np.float32(ret), "discount": np.float32(tot)}}
            writer.append({**data, **scalars} if k == 0 else scalars)
            self._create(i, self._item(i, first_start + k, t + k, t))
        if not targets:
            writer.append(data)
        if last:
            rewards.clear()
            factors.clear()
            return
        if targets:
            del rewards[0], factors[0]
        rewards.append(float(step["reward"][i]))
        factors.append(self.gamma * float(step["discount"][i]))


class SequenceWriter(_BatchedWriter):
    """Writes overlapping length-L sequences starting at episode steps 0, P, 2P, ... (< T).

    A sequence never crosses an episode's end: one that runs past the last step T is completed
    with all-zero padding steps (mask False) appended to that env's writer after T: at most L-1
    per episode, shared by the padded sequences (zeros compress to almost nothing). Reverb
    cannot reference one padding step repeatedly within an item, hence one step per slot.
    P > L is allowed (steps between sequences are then never replayed).
    """

    def __init__(self, client_or_address, table: str, spec: StepSpec, length: int, period: int,
                 priority: float = 1.0, max_in_flight_items: int = 16):
        for what, v in (("sequence length", length), ("sequence period", period)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{what} must be a positive integer, got {v!r}.")
        super().__init__(client_or_address, table, spec, priority, int(length) + 2, max_in_flight_items)
        self.length, self.period = int(length), int(period)
        fields = spec.fields()
        self._padding = {k: s.zeros() for k, s in fields.items() if k != "extras"}
        self._padding["extras"] = {k: s.zeros() for k, s in fields["extras"].items()}
        self._padding["mask"] = np.asarray(False)

    def _item(self, i: int, index: slice) -> dict[str, Any]:
        h = self._writers[i].history
        item = {k: h[k][index] for k in self._padding if k != "extras"}
        item["extras"] = {k: h["extras"][k][index] for k in self.spec.extras}
        return item

    def _write_env(self, i: int, t: int, last: bool, step: dict[str, Any]) -> None:
        data = {k: v[i] for k, v in step.items() if k != "extras"}
        data["extras"] = {k: v[i] for k, v in step["extras"].items()}
        data["mask"] = np.asarray(True)
        writer = self._writers[i]
        writer.append(data)
        length, period = self.length, self.period
        s = t - length + 1  # the start whose sequence ends exactly at t
        if s >= 0 and s % period == 0 and not (last and s == t):
            self._create(i, self._item(i, slice(-length, None)))  # steps s..t
        if not last:
            return
        first_pending = -(-max(0, t - length + 2) // period) * period  # ceil to a multiple of P
        num_pad = 0
        for s in range(first_pending, t, period):  # later starts need more padding: append it as it is needed
            while t + num_pad < s + length - 1:
                writer.append(self._padding)
                num_pad += 1
            self._create(i, self._item(i, slice(-length, None)))  # steps s..t, then padding


def reverb_writer(writer: _BatchedWriter) -> Callable[[Iterator[Mapping[str, Any]]], Iterator[Mapping[str, Any]]]:
    """Pipeline stage: writes every batched step to Reverb and yields it on unchanged.

    The first step is validated against ``writer.spec`` (SpecMismatchError names the field).
    """

    def stage(steps: Iterator[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        checked = False
        for step in steps:
            if not checked:
                validate_step(writer.spec, step)
                checked = True
            writer.write(step)
            yield step

    return stage
