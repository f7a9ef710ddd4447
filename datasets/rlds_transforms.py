"""Pure-numpy pieces of the Grain RLDS loader: a fast record decoder and per-record transforms.

`decode_episode(record, layout)` turns one serialized ``tf.train.Example`` (an RLDS episode as
tfds writes it) into ``{field: [L, *shape], "extras": {name: [L, ...]}}``; `decode_columns(records,
layout, lengths)` decodes many episodes at once into columns ``{field: [sum L, *shape]}``: each
field's packed payloads (`rlds_encoding.parse_example`) are joined and decoded in one numpy call.

Per-record transforms over one decoded episode of L = T + 1 steps (a step t has o_t, a_t, r_t, d_t):

    transition(steps, t)            t in [0, T): o_t, a_t, r_t, d_t, o_{t+1}, is_terminal_{t+1}
    nstep(steps, t, n, gamma)       t in [0, T): n-step return and bootstrap discount (see nstep.py)
    window(steps, start, length)    {"steps": {field: [length, ...]}, "mask": [length] bool}

`record_counts(lengths, ...)` gives how many records each episode yields, so that an index
``i -> (episode, k)`` needs only the episode lengths (never the data). The vectorised forms
`gather(cols, off, lengths, ep, k, ...)` build many records of one transform from columns (row
``off[e] + t`` is step t of episode e) in one fancy-indexing pass per field.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from rillet.datasets.nstep import check_nstep_args, window_targets
from rillet.datasets.rlds_encoding import (WireFormatError, decode_values, feature_segments, join_packed,
                                           parse_example, serialized_features)
from rillet.datasets.specs import ArraySpec
from rillet.errors import ConfigError, SpecMismatchError

TRANSFORMS = ("transitions", "nstep", "windows")


def _unpack(steps: dict, name: str, arr: np.ndarray) -> None:
    if name.startswith("extras/"):
        steps["extras"][name[len("extras/"):]] = arr
    else:
        steps[name] = arr


def _parse(record: bytes, where: str) -> dict:
    try:
        return parse_example(record)
    except WireFormatError as e:
        raise SpecMismatchError(f"a record in '{where}' is not a valid tf.train.Example ({e}); the shard "
                                "is corrupt or not an RLDS dataset.") from None


def _field(kind, payload, name: str, spec: ArraySpec, where: str) -> np.ndarray:
    """Flat payload of one field -> [rows, *shape] of its dtype."""
    try:
        flat = decode_values(kind, payload, spec.np_dtype)
    except ValueError as e:  # WireFormatError, or bytes that are not whole values
        raise SpecMismatchError(f"record in '{where}': 'steps/{name}' is corrupt ({e}).") from None
    size = math.prod(spec.shape)
    if size == 0 or flat.size % size:
        raise SpecMismatchError(f"record in '{where}': 'steps/{name}' has {flat.size} values, not a multiple "
                                f"of its shape {spec.shape}.")
    return flat.reshape((-1,) + spec.shape)


def decode_episode(record: bytes, layout: Mapping[str, ArraySpec], where: str = "dataset") -> dict:
    """Serialized episode -> {field: [L, *shape], "extras": {name: [L, ...]}} (read-only arrays)."""
    raw = _parse(record, where)
    steps: dict[str, Any] = {"extras": {}}
    length = None
    for name, spec in layout.items():
        if "steps/" + name not in raw:
            raise SpecMismatchError(f"record in '{where}' lacks feature 'steps/{name}'.")
        kind, segments = raw["steps/" + name]
        arr = _field(kind, b"".join(segments), name, spec, where)
        if length is not None and len(arr) != length:
            raise SpecMismatchError(f"record in '{where}': 'steps/{name}' has {len(arr)} steps, not {length}.")
        length = len(arr)
        _unpack(steps, name, arr)
    return steps


def decode_columns(records: Sequence[bytes], layout: Mapping[str, ArraySpec], lengths: np.ndarray,
                   where: str = "dataset") -> dict:
    """Episodes of `lengths` [m] steps -> {field: [sum(lengths), *shape], "extras": {...}} (one
    numpy decode per field over the joined payloads; rows of episode j start at cumsum(lengths)[j-1])."""
    try:
        columns = serialized_features(records, ["steps/" + name for name in layout])
    except WireFormatError as e:
        raise SpecMismatchError(f"a record in '{where}' is not a valid tf.train.Example ({e}); the shard "
                                "is corrupt or not an RLDS dataset.") from None
    steps: dict[str, Any] = {"extras": {}}
    total = int(np.sum(lengths))
    for (name, spec), raws in zip(layout.items(), columns):
        joined = join_packed(raws)
        if joined is not None:
            arr = _field(*joined, name, spec, where)
        else:  # other encodings (bytes lists, unpacked or split runs, a missing feature): one by one
            parts = []
            for raw in raws:
                kind, segments = feature_segments(raw)
                if kind is None:
                    raise SpecMismatchError(f"a record in '{where}' lacks feature 'steps/{name}'.")
                parts.append(_field(kind, b"".join(segments), name, spec, where))
            arr = np.concatenate(parts)
        if len(arr) != total:
            raise SpecMismatchError(f"records in '{where}' hold {len(arr)} steps of 'steps/{name}' but the "
                                    f"episode index lists {total}; delete rillet_index-*.npz to rebuild it.")
        _unpack(steps, name, arr)
    return steps


def episode_length(record: bytes) -> int:
    """Steps in a serialized episode, read from its is_first feature (one value per step)."""
    kind, segments = _parse(record, "dataset")["steps/is_first"]
    return len(decode_values(kind, b"".join(segments), np.dtype(bool)))


def check_transform(transform: str, *, n: int = 1, gamma: float = 0.99, window: int = 1,
                    stride: int | None = None) -> None:
    if transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {TRANSFORMS}, got {transform!r}.")
    if transform == "nstep":
        check_nstep_args(n, gamma, "rlds_loader")
    if transform == "windows" and (window < 1 or (stride is not None and stride < 1)):
        raise ConfigError(f"windows need window >= 1 and stride >= 1, got {window} and {stride}.")


def record_counts(lengths: np.ndarray, transform: str, window: int = 1, stride: int | None = None,
                  pad: bool = True, every_start: bool = False) -> np.ndarray:
    """[E] int64: records each episode of `lengths` [E] steps yields under `transform`. Windows start at
    0, stride, ...: up to the first that reaches the episode's end (pad), only whole ones (not pad), or
    every_start: at every start before the last step (the replay SequenceWriter's rule, so that with a
    burn-in the last transitions are learned from too)."""
    lengths = np.asarray(lengths, np.int64)
    if transform in ("transitions", "nstep"):
        return np.maximum(lengths - 1, 0)
    stride = window if stride is None else stride
    if every_start:
        return -(-np.maximum(lengths - 1, 0) // stride)
    if not pad:
        return np.where(lengths >= window, (lengths - window) // stride + 1, 0)
    # starts 0, stride, ... below L, up to and including the first that reaches the end
    reach = -(-np.maximum(lengths - window, 0) // stride) + 1
    return np.minimum(reach, -(-lengths // stride))


def transition(steps: Mapping, t: int) -> dict:
    """One transition t -> t+1: observation [*obs], action, reward [], discount [], next_observation,
    is_terminal [] (of step t+1), extras at t."""
    c = np.array  # copies: a buffered record must not pin its whole decoded episode
    return {
        "observation": c(steps["observation"][t]), "action": c(steps["action"][t]),
        "reward": c(steps["reward"][t]), "discount": c(steps["discount"][t]),
        "next_observation": c(steps["observation"][t + 1]), "is_terminal": c(steps["is_terminal"][t + 1]),
        "extras": {k: c(v[t]) for k, v in steps["extras"].items()},
    }


def nstep(steps: Mapping, t: int, n: int, gamma: float) -> dict:
    """n-step transition from t: with m = min(n, T - t) and g_j = gamma * d_j,
    reward = sum_{k<m} (prod_{j<k} g_{t+j}) r_{t+k}, discount = prod_{j<m} g_{t+j} (0 after a
    termination), next_observation = o_{t+m}, is_terminal of step t+m; float32 scalars."""
    m = min(n, len(steps["reward"]) - 1 - t)
    ret, disc = window_targets(steps["reward"], steps["discount"], gamma, [t], [m])
    out = transition(steps, t)
    out["reward"], out["discount"] = np.float32(ret[0]), np.float32(disc[0])
    out["next_observation"] = np.array(steps["observation"][t + m])
    out["is_terminal"] = np.array(steps["is_terminal"][t + m])
    return out


def _cut(x: np.ndarray, start: int, length: int) -> np.ndarray:
    piece = np.array(x[start:start + length])  # a copy, not a view pinning the episode
    if len(piece) < length:
        piece = np.concatenate([piece, np.zeros((length - len(piece),) + x.shape[1:], x.dtype)])
    return piece


def window(steps: Mapping, start: int, length: int) -> dict:
    """{"steps": {field: [length, ...], "extras": {...}}, "mask": [length] bool (False = padding)}."""
    n = len(steps["is_first"])
    return {
        "steps": {k: ({e: _cut(v, start, length) for e, v in x.items()} if k == "extras" else _cut(x, start, length))
                  for k, x in steps.items()},
        "mask": np.arange(start, start + length) < n,
    }


def gather(cols: Mapping, off: np.ndarray, lengths: np.ndarray, ep: np.ndarray, k: np.ndarray, transform: str,
           *, n: int = 1, gamma: float = 0.99, window: int = 1, stride: int = 1) -> dict:
    """Records (ep [r], k [r]) of `transform` from columns (`decode_columns`; off [m] row of each
    episode's first step, lengths [m]): the per-record functions above, stacked on a leading axis r.
    k is the step t (transitions, nstep) or the window index (start = k * stride)."""
    base = off[ep]
    if transform == "windows":
        t = (k * stride)[:, None] + np.arange(window)
        mask = t < lengths[ep][:, None]
        rows = base[:, None] + np.minimum(t, lengths[ep][:, None] - 1)
        pad = ~mask

        def cut(x):
            out = x[rows]
            if pad.any():
                out[pad] = 0
            return out

        return {"steps": {f: ({e: cut(v) for e, v in x.items()} if f == "extras" else cut(x))
                          for f, x in cols.items()}, "mask": mask}
    rows = base + k
    out = {"observation": cols["observation"][rows], "action": cols["action"][rows],
           "reward": cols["reward"][rows], "discount": cols["discount"][rows],
           "next_observation": cols["observation"][rows + 1], "is_terminal": cols["is_terminal"][rows + 1],
           "extras": {e: v[rows] for e, v in cols["extras"].items()}}
    if transform == "nstep":  # `nstep` over all records at once
        m = np.minimum(n, lengths[ep] - 1 - k)
        ret, disc = window_targets(cols["reward"], cols["discount"], gamma, rows, m)
        out["reward"], out["discount"] = ret.astype(np.float32), disc.astype(np.float32)
        out["next_observation"] = cols["observation"][rows + m]
        out["is_terminal"] = cols["is_terminal"][rows + m]
    return out
