"""Reverb table signatures, table construction and an in-process server.

Two item layouts, both derived from a `StepSpec` (shapes below are per item, without batch axis):

* n-step transition (`transition_signature`)::

    {"observation": obs_shape, "action": act_shape, "reward": () f32, "discount": () f32,
     "next_observation": obs_shape, "extras": {name: shape}}

  ``reward`` is the n-step return R_t and ``discount`` the full bootstrap discount D_t
  (gamma**m times the env discounts; see `rillet.datasets.nstep`).

* sequence (`sequence_signature`): every step field with a leading time axis [L, ...] plus
  ``"mask"`` [L] bool (True for real steps, False for zero padding after an episode's end).
"""

from __future__ import annotations

import math
import numbers
import shutil
import tempfile
import time
import weakref
from typing import Any, Sequence

import reverb
import tensorflow as tf

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, ReplayUnreachableError

SAMPLERS = ("uniform", "prioritized")


def _tensor_spec(spec: ArraySpec, leading: tuple[int, ...] = (), name: str | None = None) -> tf.TensorSpec:
    return tf.TensorSpec(leading + tuple(spec.shape), tf.as_dtype(spec.np_dtype), name=name)


def transition_signature(spec: StepSpec) -> dict[str, Any]:
    """tf.TensorSpec pytree of one n-step transition item (see module docstring)."""
    return {
        "observation": _tensor_spec(spec.observation, name="observation"),
        "action": _tensor_spec(spec.action, name="action"),
        "reward": _tensor_spec(spec.reward, name="reward"),
        "discount": _tensor_spec(spec.discount, name="discount"),
        "next_observation": _tensor_spec(spec.observation, name="next_observation"),
        "extras": {k: _tensor_spec(v, name=f"extras/{k}") for k, v in spec.extras.items()},
    }


def sequence_signature(spec: StepSpec, length: int) -> dict[str, Any]:
    """tf.TensorSpec pytree of one sequence item: step fields as [L, ...] plus "mask" [L] bool."""
    _check_positive_int("sequence length", length)
    lead = (int(length),)  # int() also accepts numpy integers
    fields = spec.fields()
    sig: dict[str, Any] = {
        k: _tensor_spec(v, lead, name=k) for k, v in fields.items() if k != "extras"
    }
    sig["extras"] = {k: _tensor_spec(v, lead, name=f"extras/{k}") for k, v in fields["extras"].items()}
    sig["mask"] = _tensor_spec(StepSpec.flag, lead, name="mask")
    return sig


def _check_positive_int(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}.")


def default_error_buffer(min_size_to_sample: int, samples_per_insert: float) -> float:
    """Default SampleToInsertRatio tolerance.

    max(10 * max(1, samples_per_insert), 0.1 * min_size_to_sample * samples_per_insert): actors
    and learners may drift apart by about ten inserts' worth of samples, or 10% of the warm-up
    budget for large tables, before the slower side blocks the faster one.
    """
    return max(10.0 * max(1.0, samples_per_insert), 0.1 * min_size_to_sample * samples_per_insert)


def make_table(
    name: str,
    signature: Any,
    *,
    sampler: str = "uniform",
    priority_exponent: float = 0.6,
    max_size: int,
    min_size_to_sample: int = 1,
    samples_per_insert: float | None = None,
    error_buffer: float | None = None,
) -> reverb.Table:
    """A replay table with a FIFO remover.

    sampler: "uniform" or "prioritized" (P(i) ∝ priority_i ** priority_exponent).
    Rate limiter: MinSize(min_size_to_sample) when samples_per_insert is None, otherwise
    SampleToInsertRatio(samples_per_insert, min_size_to_sample, error_buffer) with
    error_buffer defaulting to `default_error_buffer`.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"table name must be a non-empty string, got {name!r}.")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown replay sampler {sampler!r}; choose one of {list(SAMPLERS)}.")
    _check_positive_int("max_size", max_size)
    _check_positive_int("min_size_to_sample", min_size_to_sample)
    if max_size < min_size_to_sample:
        raise ConfigError(
            f"max_size ({max_size}) < min_size_to_sample ({min_size_to_sample}): sampling could "
            "never start. Lower min_size_to_sample or raise max_size."
        )
    if sampler == "prioritized":
        if not math.isfinite(priority_exponent) or priority_exponent < 0:
            raise ConfigError(
                f"priority_exponent must be finite and >= 0, got {priority_exponent!r} (typical: 0.6)."
            )
        selector = reverb.selectors.Prioritized(float(priority_exponent))
    else:
        selector = reverb.selectors.Uniform()

    limiter = _rate_limiter(min_size_to_sample, samples_per_insert, error_buffer)
    return reverb.Table(
        name=name,
        sampler=selector,
        remover=reverb.selectors.Fifo(),
        max_size=int(max_size),
        rate_limiter=limiter,
        signature=signature,
    )


def _rate_limiter(min_size_to_sample: int, samples_per_insert: float | None, error_buffer: float | None):
    """MinSize, or SampleToInsertRatio with a checked (or default) error buffer."""
    if samples_per_insert is None:
        if error_buffer is not None:
            raise ConfigError("error_buffer only applies with samples_per_insert; set both or neither.")
        return reverb.rate_limiters.MinSize(int(min_size_to_sample))
    spi = float(samples_per_insert)
    if not math.isfinite(spi) or spi <= 0:
        raise ConfigError(f"samples_per_insert must be finite and > 0, got {samples_per_insert!r}.")
    buf = default_error_buffer(min_size_to_sample, spi) if error_buffer is None else float(error_buffer)
    if not math.isfinite(buf) or buf < max(1.0, spi):
        raise ConfigError(
            f"error_buffer ({error_buffer!r}) must be >= max(1, samples_per_insert) = {max(1.0, spi)}; "
            "smaller values can deadlock actors and learners. Leave it None for a sensible default."
        )
    return reverb.rate_limiters.SampleToInsertRatio(spi, int(min_size_to_sample), buf)


def make_server(tables: Sequence[reverb.Table], port: int | None = None, checkpoint_dir: str = "") -> reverb.Server:
    """An in-process Reverb server hosting `tables` (port None: a free port is picked). With
    `checkpoint_dir`, `reverb.Client.checkpoint()` writes the tables there and a server started on a
    directory that holds a checkpoint restores the newest one (Reverb's own checkpointer)."""
    tables = list(tables)
    if not tables:
        raise ConfigError("make_server needs at least one table; build them with make_table(...).")
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ConfigError(f"table names must be unique on one server, got {names}.")
    scratch = "" if checkpoint_dir else tempfile.mkdtemp(prefix="rillet-reverb-")
    server = reverb.Server(tables, port=port,
                           checkpointer=reverb.checkpointers.DefaultCheckpointer(checkpoint_dir or scratch))
    if scratch:  # Reverb would leave its default checkpoint directory in /tmp for ever; this one goes with the server
        weakref.finalize(server, shutil.rmtree, scratch, True)
    return server


def server_address(server: reverb.Server) -> str:
    """The "127.0.0.1:PORT" address of an in-process server (for clients and datasets)."""
    return f"127.0.0.1:{server.port}"


def wait_for_server(address: str, timeout_s: float = 60.0, who: str = "rillet", poll_s: float = 5.0) -> reverb.Client:
    """A client of the Reverb server at `address` once it answers. While it does not, prints one line
    per try (who is waiting, for what, for how long); ReplayUnreachableError after `timeout_s` seconds."""
    client, started, tries = reverb.Client(address), time.monotonic(), 0
    while True:
        tried_at = time.monotonic()
        try:
            client.server_info(timeout=max(1, int(poll_s)))
            if tries:
                print(f"{who}: the Reverb server at {address} answers again.", flush=True)
            return client
        except (reverb.errors.ReverbError, RuntimeError) as e:
            waited, tries = time.monotonic() - started, tries + 1
            if waited >= timeout_s:
                raise ReplayUnreachableError(
                    f"{who}: no Reverb server answers at {address} after {waited:.0f} s ({type(e).__name__}). "
                    "Start it first (`rillet replay-server AGENT ...` prints its address) or fix --replay.address."
                ) from None
            print(f"{who}: waiting for the Reverb server at {address} ({waited:.0f} of {timeout_s:.0f} s, try "
                  f"{tries})...", flush=True)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tried_at)))  # a refused connection fails at once
