"""Pure-numpy pieces of the Grain RLDS loader: a fast record decoder and per-record transforms.

`decode_episode(record, layout)` turns one serialized ``tf.train.Example`` (an RLDS episode as
tfds writes it) into ``{field: [L, *shape], "extras": {name: [L, ...]}}`` with the TF-free protobuf
class that tensorflow_datasets ships; each packed float list is re-serialized and viewed with
`np.frombuffer`, packed varint lists are decoded vectorised, so no per-value Python runs.

Per-record transforms over one decoded episode of L = T + 1 steps (a step t has o_t, a_t, r_t, d_t):

    transition(steps, t)            t in [0, T): o_t, a_t, r_t, d_t, o_{t+1}, is_terminal_{t+1}
    nstep(steps, t, n, gamma)       t in [0, T): n-step return and bootstrap discount (see nstep.py)
    window(steps, start, length)    {"steps": {field: [length, ...]}, "mask": [length] bool}

`record_counts(lengths, ...)` gives how many records each episode yields, so that an index
``i -> (episode, k)`` needs only the episode lengths (never the data).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from rillet.datasets.specs import ArraySpec
from rillet.errors import ConfigError, SpecMismatchError

TRANSFORMS = ("transitions", "nstep", "windows")


def decode_varints(payload) -> np.ndarray:
    """Packed protobuf varints -> int64 array (vectorised; negatives are 10-byte two's complement)."""
    b = np.frombuffer(payload, np.uint8)
    if not b.size or b.max() < 0x80:
        return b.astype(np.int64)
    ends = np.flatnonzero(b < 0x80)
    starts = np.r_[0, ends[:-1] + 1]
    group = np.repeat(np.arange(len(ends)), ends - starts + 1)
    pos = np.arange(b.size) - starts[group]
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.add.reduceat(parts, starts).view(np.int64)


def _header_size(raw: bytes) -> int:
    """Bytes before the packed payload of a serialized FloatList/Int64List (tag + length varint)."""
    if not raw:
        return 0
    pos = 1
    while raw[pos] & 0x80:
        pos += 1
    return pos + 1


def _raw_features(record: bytes) -> dict[str, tuple[str | None, Any]]:
    """{key: (kind, payload)}: kind "bytes_list" -> list of bytes; "float_list"/"int64_list" -> the
    packed little-endian payload (the list re-serialized, its header skipped; no per-value Python)."""
    from tensorflow_datasets.proto import tf_example_pb2  # protobuf class only; no TensorFlow

    out = {}
    for key, feat in tf_example_pb2.Example.FromString(record).features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = (kind, feat.bytes_list.value)
        elif kind is not None:
            raw = getattr(feat, kind).SerializeToString()
            if raw and raw[0] != 0x0A:  # not one packed field 1 (e.g. unpacked values)
                values = np.asarray(getattr(feat, kind).value, np.float32 if kind == "float_list" else np.int64)
                out[key] = ("array", values)
            else:
                out[key] = (kind, memoryview(raw)[_header_size(raw):])
        else:
            out[key] = (None, None)
    return out


def decode_episode(record: bytes, layout: Mapping[str, ArraySpec], where: str = "dataset") -> dict:
    """Serialized episode -> {field: [L, *shape], "extras": {name: [L, ...]}} (read-only arrays)."""
    from google.protobuf.message import DecodeError

    try:
        raw = _raw_features(record)
    except (DecodeError, ValueError, IndexError) as e:
        raise SpecMismatchError(f"a record in '{where}' is not a valid tf.train.Example ({e}); the shard "
                                "is corrupt or not an RLDS dataset.") from None
    steps: dict[str, Any] = {"extras": {}}
    length = None
    for name, spec in layout.items():
        key = "steps/" + name
        if key not in raw:
            raise SpecMismatchError(f"record in '{where}' lacks feature '{key}'.")
        kind, payload = raw[key]
        if kind == "bytes_list":
            flat = np.frombuffer(b"".join(payload), spec.np_dtype)
        elif kind == "float_list":
            flat = np.frombuffer(payload, "<f4")
        elif kind == "int64_list":
            flat = decode_varints(payload)
        elif kind == "array":
            flat = payload
        else:
            flat = np.zeros(0, spec.np_dtype)
        if flat.dtype != spec.np_dtype:
            flat = flat.astype(spec.np_dtype)
        size = math.prod(spec.shape)
        if size == 0 or flat.size % size:
            raise SpecMismatchError(f"record in '{where}': '{key}' has {flat.size} values, not a multiple of "
                                    f"its shape {spec.shape}.")
        arr = flat.reshape((-1,) + spec.shape)
        if length is not None and len(arr) != length:
            raise SpecMismatchError(f"record in '{where}': '{key}' has {len(arr)} steps, not {length}.")
        length = len(arr)
        if name.startswith("extras/"):
            steps["extras"][name[len("extras/"):]] = arr
        else:
            steps[name] = arr
    return steps


def episode_length(record: bytes) -> int:
    """Steps in a serialized episode, read from its is_first feature (one byte per bool)."""
    kind, payload = _raw_features(record)["steps/is_first"]
    return len(b"".join(payload)) if kind == "bytes_list" else len(decode_varints(payload))


def check_transform(transform: str, *, n: int = 1, gamma: float = 0.99, window: int = 1,
                    stride: int | None = None) -> None:
    if transform not in TRANSFORMS:
        raise ConfigError(f"transform must be one of {TRANSFORMS}, got {transform!r}.")
    if transform == "nstep":
        from rillet.datasets.nstep import check_nstep_args

        check_nstep_args(n, gamma)
    if transform == "windows" and (window < 1 or (stride is not None and stride < 1)):
        raise ConfigError(f"windows need window >= 1 and stride >= 1, got {window} and {stride}.")


def record_counts(lengths: np.ndarray, transform: str, window: int = 1, stride: int | None = None,
                  pad: bool = True) -> np.ndarray:
    """[E] int64: records each episode of `lengths` [E] steps yields under `transform`."""
    lengths = np.asarray(lengths, np.int64)
    if transform in ("transitions", "nstep"):
        return np.maximum(lengths - 1, 0)
    stride = window if stride is None else stride
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
    last = len(steps["reward"]) - 1
    m = min(n, last - t)
    g = float(gamma) * steps["discount"][t:t + m].astype(np.float64)
    weights = np.concatenate([[1.0], np.cumprod(g)])
    out = transition(steps, t)
    out["reward"] = np.float32(np.dot(weights[:m], steps["reward"][t:t + m].astype(np.float64)))
    out["discount"] = np.float32(weights[m])
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
