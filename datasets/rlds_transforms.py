"""Pure-numpy pieces of the Grain RLDS loader: a fast record decoder and per-record transforms.

`decode_episode(record, layout)` turns one serialized ``tf.train.Example`` (an RLDS episode as
tfds writes it) into ``{field: [L, *shape], "extras": {name: [L, ...]}}``; `decode_columns(records,
layout, lengths)` decodes many episodes at once into columns ``{field: [sum L, *shape]}``: each
field's packed payloads (`rlds_encoding.parse_example`) are joined and decoded in one numpy call;
encoded features (images, text; `rlds_features.Feature`) are decoded value by value. Features nest
by '/' ("observation/image" -> steps["observation"]["image"]); episode metadata (`episode_layout`,
the features beside "steps") comes repeated per step under steps["episode"], so `derive` hooks and
every transform below see it.

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
from rillet.datasets.rlds_features import Feature, decode_segments
from rillet.datasets.specs import ArraySpec
from rillet.errors import ConfigError, SpecMismatchError

TRANSFORMS = ("transitions", "nstep", "windows")


def _unpack(steps: dict, name: str, arr: np.ndarray) -> None:
    """steps["a"]["b"] = arr for name "a/b" (features nest by '/'; "extras/x" lands in extras)."""
    *parents, leaf = name.split("/")
    node = steps
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = arr


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
    if (size == 0 and flat.size) or (size and flat.size % size):
        raise SpecMismatchError(f"record in '{where}': 'steps/{name}' has {flat.size} values, not a multiple "
                                f"of its shape {spec.shape}.")
    return flat.reshape((-1,) + spec.shape)


def _decode(kind, segments: list, key: str, spec: ArraySpec | Feature, where: str) -> np.ndarray:
    """One feature's wire segments -> [rows, *shape]: packed numbers, or bytes values (`rlds_features`)."""
    if not isinstance(spec, Feature):
        return _field(kind, b"".join(segments), key, spec, where)
    if kind not in ("bytes_list", None) or len(segments) % spec.values_per_row:
        raise SpecMismatchError(f"record in '{where}': '{key}' holds {len(segments)} {kind} values, not bytes "
                                f"values of its {spec.kind} feature {spec.shape}; the shard is corrupt.")
    return decode_segments(spec, segments, f"record in '{where}', '{key}'")


def _missing(key: str, where: str) -> SpecMismatchError:
    return SpecMismatchError(f"a record in '{where}' lacks feature '{key}'; its features.json lists it (the shard "
                             "belongs to another dataset, or is corrupt).")


def decode_episode(record: bytes, layout: Mapping[str, ArraySpec | Feature], where: str = "dataset",
                   episode_layout: Mapping[str, ArraySpec | Feature] | None = None) -> dict:
    """Serialized episode -> {field: [L, *shape], "extras": {name: [L, ...]}} (read-only arrays; nested
    features as nested dicts), plus "episode": {name: [L, ...]} (episode metadata, repeated per step)
    when `episode_layout` has entries."""
    raw = _parse(record, where)
    steps: dict[str, Any] = {"extras": {}}
    length = None
    for name, spec in layout.items():
        if "steps/" + name not in raw:
            raise _missing("steps/" + name, where)
        arr = _decode(*raw["steps/" + name], "steps/" + name, spec, where)
        if length is not None and len(arr) != length:
            raise SpecMismatchError(f"record in '{where}': 'steps/{name}' has {len(arr)} steps, not {length}.")
        length = len(arr)
        _unpack(steps, name, arr)
    for name, spec in (episode_layout or {}).items():
        if name not in raw:
            raise _missing(name, where)
        value = _decode(*raw[name], name, spec, where)
        _unpack(steps, "episode/" + name, np.repeat(value[:1], length or 0, axis=0))
    return steps


def _column(raws: list, key: str, spec: ArraySpec | Feature, where: str) -> np.ndarray:
    """Serialized Features of one key, one per record -> their rows joined [sum rows, *shape]."""
    joined = None if isinstance(spec, Feature) else join_packed(raws)
    if joined is not None:
        return _field(*joined, key, spec, where)
    parts = []
    for raw in raws:  # bytes lists, unpacked or split runs, a missing feature: one by one
        kind, segs = feature_segments(raw)
        if not len(raw) or (kind is None and not isinstance(spec, Feature)):
            raise _missing(key, where)
        parts.append((kind, segs))
    if not isinstance(spec, Feature):
        return np.concatenate([_field(k, b"".join(segs), key, spec, where) for k, segs in parts])
    kinds = {k for k, _ in parts} - {None}
    return _decode(kinds.pop() if len(kinds) == 1 else None if not kinds else "mixed",
                   [v for _, segs in parts for v in segs], key, spec, where)


def decode_columns(records: Sequence[bytes], layout: Mapping[str, ArraySpec | Feature], lengths: np.ndarray,
                   where: str = "dataset", episode_layout: Mapping[str, ArraySpec | Feature] | None = None) -> dict:
    """Episodes of `lengths` [m] steps -> {field: [sum(lengths), *shape], "extras": {...}} (one
    numpy decode per field over the joined payloads; rows of episode j start at cumsum(lengths)[j-1]);
    episode metadata (`episode_layout`) under "episode", repeated per step."""
    episode_layout = episode_layout or {}
    keys = ["steps/" + name for name in layout] + list(episode_layout)
    try:
        columns = serialized_features(records, keys)
    except WireFormatError as e:
        raise SpecMismatchError(f"a record in '{where}' is not a valid tf.train.Example ({e}); the shard "
                                "is corrupt or not an RLDS dataset.") from None
    steps: dict[str, Any] = {"extras": {}}
    total = int(np.sum(lengths))
    specs = list(layout.values()) + list(episode_layout.values())
    for i, (key, spec, raws) in enumerate(zip(keys, specs, columns)):
        arr = _column(raws, key, spec, where)
        if i >= len(layout):  # episode metadata: one row per record, repeated over its steps
            if len(arr) != len(records):
                raise SpecMismatchError(f"records in '{where}' hold {len(arr)} values of '{key}', not one each.")
            _unpack(steps, "episode/" + key, np.repeat(arr, lengths, axis=0))
            continue
        if len(arr) != total:
            raise SpecMismatchError(f"records in '{where}' hold {len(arr)} steps of '{key}' but the "
                                    f"episode index lists {total}; delete rillet_index-*.npz to rebuild it.")
        _unpack(steps, key[len("steps/"):], arr)
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


def tree_map(fn, tree):
    """fn over the arrays of a nested dict (decoded steps: nested features, extras, episode metadata)."""
    return {k: tree_map(fn, v) for k, v in tree.items()} if isinstance(tree, Mapping) else fn(tree)


_DROPPED = ("is_first", "is_last")  # a transition's own flags: is_terminal is that of step t+1


def _transition_at(steps: Mapping, take, t, t_next) -> dict:
    """take(x, rows) of every field: the step fields at t, next_observation and is_terminal at t_next."""
    out = {k: tree_map(lambda x: take(x, t), v) for k, v in steps.items()
           if k not in _DROPPED and k != "is_terminal"}
    out["next_observation"] = tree_map(lambda x: take(x, t_next), steps["observation"])
    out["is_terminal"] = take(steps["is_terminal"], t_next)
    out.setdefault("extras", {})
    return out


def transition(steps: Mapping, t: int) -> dict:
    """One transition t -> t+1: observation [*obs], action, reward [], discount [], next_observation,
    is_terminal [] (of step t+1), extras (and any other step field, "episode" metadata) at t."""
    return _transition_at(steps, lambda x, i: np.array(x[i]), t, t + 1)  # copies: never pin the episode


def nstep(steps: Mapping, t: int, n: int, gamma: float) -> dict:
    """n-step transition from t: with m = min(n, T - t) and g_j = gamma * d_j,
    reward = sum_{k<m} (prod_{j<k} g_{t+j}) r_{t+k}, discount = prod_{j<m} g_{t+j} (0 after a
    termination), next_observation = o_{t+m}, is_terminal of step t+m; float32 scalars."""
    m = min(n, len(steps["reward"]) - 1 - t)
    ret, disc = window_targets(steps["reward"], steps["discount"], gamma, [t], [m])
    out = transition(steps, t)
    out["reward"], out["discount"] = np.float32(ret[0]), np.float32(disc[0])
    out["next_observation"] = tree_map(lambda x: np.array(x[t + m]), steps["observation"])
    out["is_terminal"] = np.array(steps["is_terminal"][t + m])
    return out


def _blank(x: np.ndarray):
    """The padding value of x's dtype: 0, or b"" for bytes (object) arrays."""
    return b"" if x.dtype == object else 0


def _cut(x: np.ndarray, start: int, length: int) -> np.ndarray:
    piece = np.array(x[start:start + length])  # a copy, not a view pinning the episode
    if len(piece) < length:
        piece = np.concatenate([piece, np.full((length - len(piece),) + x.shape[1:], _blank(x), x.dtype)])
    return piece


def window(steps: Mapping, start: int, length: int) -> dict:
    """{"steps": {field: [length, ...], "extras": {...}}, "mask": [length] bool (False = padding)}."""
    n = len(steps["is_first"])
    return {"steps": tree_map(lambda x: _cut(x, start, length), steps),
            "mask": np.arange(start, start + length) < n}


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
                out[pad] = _blank(x)
            return out

        return {"steps": tree_map(cut, cols), "mask": mask}
    rows = base + k
    out = _transition_at(cols, lambda x, i: x[i], rows, rows + 1)
    if transform == "nstep":  # `nstep` over all records at once
        m = np.minimum(n, lengths[ep] - 1 - k)
        ret, disc = window_targets(cols["reward"], cols["discount"], gamma, rows, m)
        out["reward"], out["discount"] = ret.astype(np.float32), disc.astype(np.float32)
        out["next_observation"] = tree_map(lambda x: x[rows + m], cols["observation"])
        out["is_terminal"] = cols["is_terminal"][rows + m]
    return out
