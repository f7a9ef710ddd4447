"""The ``tf.train.Example`` wire format of RLDS episodes: per-feature payloads out, whole records in.

    payloads = parse_example(record)     # {"steps/observation": ("float_list", [memoryview, ...]), ...}
    values = decode_values(kind, b"".join(payloads["steps/reward"][1]), np.float32)  # flat [N]
    kind, joined = join_packed(serialized_features(records, ["steps/reward"])[0])   # many records
    record = encode_example({"steps/reward": np.array([...], np.float32), ...})

An Example is ``Features features = 1`` -> ``repeated MapEntry feature = 1`` -> ``{string key = 1;
Feature value = 2}``, and a Feature is one of ``bytes_list = 1``, ``float_list = 2``, ``int64_list = 3``,
each a ``repeated value = 1``. Packed float lists are little-endian float32 bytes and packed int64
lists are varints, so the concatenated segments of a feature (one per packed run or unpacked value)
are its values, ready for `np.frombuffer` / `decode_varints`. Small records are parsed by the
TF-free protobuf class tensorflow_datasets ships (C upb) and each Feature re-serialized; large ones
are walked here as views (no copy). The encoder writes the proto `tensorflow_datasets`' example
serializer writes for plain Tensor features (integers and bools as int64 varints, floats as
float32), without protobuf objects.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}
_Example = _DecodeError = None  # protobuf classes, imported on first use


class WireFormatError(ValueError):
    """Bytes that are not a serialized tf.train.Example."""


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireFormatError("varint longer than 10 bytes")


def _fields(buf, pos: int, end: int):
    """Yields (field number, wire type, start, stop) of a message's fields in buf[pos:end]; [start,
    stop) is the payload (the varint's own bytes for wire type 0)."""
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = _varint(buf, pos - 1)
        wire = tag & 7
        if wire == 2:
            n = buf[pos]
            pos += 1
            if n >= 0x80:
                n, pos = _varint(buf, pos - 1)
            start, pos = pos, pos + n
        elif wire == 0:
            start = pos
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
        elif wire in (1, 5):
            start, pos = pos, pos + (8 if wire == 1 else 4)
        else:
            raise WireFormatError(f"unsupported wire type {wire}")
        if pos > end:
            raise WireFormatError("field runs past the end of its message")
        yield tag >> 3, wire, start, pos


def feature_segments(raw) -> tuple[str | None, list]:
    """A serialized Feature -> (kind, [memoryview segment, ...]) (see `parse_example`)."""
    if len(raw) > 3 and (raw[0] == 0x12 or raw[0] == 0x1A):  # fast path: one packed run
        pos = 1
        while raw[pos] & 0x80:
            pos += 1
        if raw[pos + 1] == 0x0A:
            n, start = raw[pos + 2], pos + 3
            if n >= 0x80:
                n, start = _varint(raw, pos + 2)
            if start + n == len(raw):
                return KINDS[raw[0] >> 3], [memoryview(raw)[start:]]
    buf = memoryview(raw)
    kind, segments = None, []
    for num, wire, s, e in _fields(buf, 0, len(buf)):
        if num in KINDS and wire == 2:
            kind, segments = KINDS[num], [buf[vs:ve] for vnum, _, vs, ve in _fields(buf, s, e) if vnum == 1]
    return kind, segments


def _example_class():
    global _Example, _DecodeError
    if _Example is None:
        from google.protobuf.message import DecodeError as _DecodeError
        from tensorflow_datasets.proto import tf_example_pb2  # TF-free protobuf classes

        _Example = tf_example_pb2.Example
    return _Example


def parse_example(record: bytes) -> dict[str, tuple[str | None, list]]:
    """{key: (kind, [memoryview segment, ...])}; kind is None for a Feature with no list set.

    float_list/int64_list segments concatenate to the packed payload; bytes_list segments are the
    values. The Example is parsed by the TF-free protobuf class tensorflow_datasets ships (C upb),
    each Feature re-serialized and split here. Raises WireFormatError on malformed input.
    """
    example = _example_class()
    try:
        feats = example.FromString(record).features.feature
        return {key: feature_segments(feat.SerializeToString()) for key, feat in feats.items()}
    except (_DecodeError, IndexError, ValueError) as e:
        raise WireFormatError(f"not a serialized tf.train.Example ({e})") from None


def feature_views(record: bytes) -> dict[str, memoryview]:
    """{key: serialized Feature} as views into `record` (no copy; for large records)."""
    buf, out = memoryview(record), {}
    for num, wire, s, e in _fields(buf, 0, len(buf)):
        if num == 1 and wire == 2:
            for fnum, fwire, fs, fe in _fields(buf, s, e):
                if fnum == 1 and fwire == 2:
                    key, value = "", buf[0:0]
                    for mnum, mwire, ms, me in _fields(buf, fs, fe):
                        if mwire == 2 and mnum in (1, 2):
                            key, value = (bytes(buf[ms:me]).decode(), value) if mnum == 1 else (key, buf[ms:me])
                    out[key] = value
    return out


def serialized_features(records, keys, large: int = 1 << 14) -> list[list]:
    """[len(keys)][len(records)]: each record's Feature `key` serialized (b"" when absent). Records
    over `large` bytes are walked here (views, no copy); smaller ones parsed by protobuf (C upb)."""
    example = _example_class()
    out: list[list] = [[] for _ in keys]
    try:
        for record in records:
            if len(record) > large:
                feats = feature_views(record)
                for key, column in zip(keys, out):
                    column.append(feats.get(key, b""))
                continue
            feats = example.FromString(record).features.feature
            for key, column in zip(keys, out):
                column.append(feats[key].SerializeToString() if key in feats else b"")
    except (_DecodeError, IndexError, UnicodeDecodeError) as e:
        raise WireFormatError(f"not a serialized tf.train.Example ({e!r})") from None
    return out


def _varints_at(b: np.ndarray, pos: np.ndarray, end: np.ndarray):
    """Varints starting at positions pos [n] of b (each before end [n]) -> (values [n], next [n]), or None."""
    value, done = np.zeros(len(pos), np.int64), np.zeros(len(pos), bool)
    pos = pos.copy()
    for i in range(10):
        if (pos[~done] >= end[~done]).any():
            return None
        byte = b[np.minimum(pos, len(b) - 1)].astype(np.int64)
        value |= np.where(done, 0, (byte & 0x7F) << (7 * i))
        pos += ~done
        done |= byte < 0x80
        if done.all():
            return value, pos
    return None


def join_packed(raws, small: int = 1024) -> tuple[str, Any] | None:
    """Serialized Features of one kind, each one packed run -> (kind, their payloads joined) or None
    (mixed kinds, bytes lists, unpacked values: decode them one by one). Small features (mean size
    below `small`) lose their headers vectorised; large ones through views (one copy)."""
    lens = np.fromiter(map(len, raws), np.int64, len(raws))
    if not len(raws) or lens.min() < 4:
        return None
    if lens.mean() >= small:
        kinds, segments = set(), []
        for raw in raws:
            kind, segs = feature_segments(raw)
            kinds.add(kind)
            segments += segs
        return (kinds.pop(), b"".join(segments)) if len(kinds) == 1 and kind != "bytes_list" else None
    b = np.frombuffer(b"".join(raws), np.uint8)
    ends = np.cumsum(lens)
    starts = ends - lens
    tag = b[starts]
    if tag[0] not in (0x12, 0x1A) or (tag != tag[0]).any():
        return None
    inner = _varints_at(b, starts + 1, ends)
    if inner is None or (inner[1] + inner[0] != ends).any() or (b[np.minimum(inner[1], len(b) - 1)] != 0x0A).any():
        return None
    run = _varints_at(b, inner[1] + 1, ends)
    if run is None or (run[1] + run[0] != ends).any():
        return None
    head = run[1] - starts
    keep = np.ones(len(b), bool)
    keep[np.repeat(starts, head) + np.arange(int(head.sum())) - np.repeat(np.cumsum(head) - head, head)] = False
    return KINDS[int(tag[0]) >> 3], b[keep]


def decode_varints(payload) -> np.ndarray:
    """Packed protobuf varints -> int64 array (vectorised; negatives are 10-byte two's complement), or
    the narrowest of uint8/uint16 when every value fits (uint8 pixels: 8x less memory; `decode_values`
    casts to the feature's dtype)."""
    b = np.frombuffer(payload, np.uint8)
    if not b.size or b.max() < 0x80:
        return b
    if b[-1] >= 0x80:
        raise WireFormatError("packed varints end inside a value")
    cont = b >= 0x80
    follows = np.zeros(b.size, bool)
    follows[1:] = cont[:-1]
    if not (cont & follows).any() and (b[follows] == 1).all():  # every value < 256 is its first byte
        return b[~follows]
    if not (cont & follows).any():  # every value < 2**14 (1 or 2 bytes)
        ends = np.flatnonzero(~cont)
        two = cont[ends - 1] & (ends > 0)
        high = b[ends].astype(np.uint16)
        return np.where(two, (b[ends - 1] & 0x7F) | (high << 7), high)
    ends = np.flatnonzero(b < 0x80)
    starts = np.r_[0, ends[:-1] + 1]
    group = np.repeat(np.arange(len(ends)), ends - starts + 1)
    pos = np.arange(b.size) - starts[group]
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    return np.add.reduceat(parts, starts).view(np.int64)


def decode_values(kind: str | None, payload: bytes, dtype) -> np.ndarray:
    """Concatenated payload of one feature kind -> flat values of `dtype`."""
    if kind == "float_list":
        if len(payload) % 4:
            raise WireFormatError("float list payload is not a multiple of 4 bytes")
        flat = np.frombuffer(payload, "<f4")
    elif kind == "int64_list":
        flat = decode_varints(payload)
    elif kind == "bytes_list":
        flat = np.frombuffer(payload, dtype)
    else:
        flat = np.zeros(0, dtype)
    return flat if flat.dtype == dtype else flat.astype(dtype)


def encode_varints(values: np.ndarray) -> bytes:
    """int64 (or smaller integer / bool) array -> packed varints (vectorised)."""
    v = np.ascontiguousarray(values).reshape(-1)
    if v.dtype == np.bool_ or (v.size and v.min() >= 0 and v.max() < 0x80):
        return v.astype(np.uint8).tobytes()
    u = v.astype(np.int64).view(np.uint64)
    nbytes = np.ones(u.size, np.int64)
    rest = u >> np.uint64(7)
    while rest.any():
        nbytes += rest > 0
        rest >>= np.uint64(7)
    pos = np.arange(int(nbytes.sum())) - np.repeat(np.cumsum(nbytes) - nbytes, nbytes)
    digits = (np.repeat(u, nbytes) >> (7 * pos).astype(np.uint64)) & np.uint64(0x7F)
    more = pos < np.repeat(nbytes, nbytes) - 1
    return (digits.astype(np.uint8) | (more.astype(np.uint8) << 7)).tobytes()


def _header(field: int, n: int) -> bytes:
    """Tag and length of a length-delimited field."""
    if n < 0x80:
        return bytes((field << 3 | 2, n))
    out = bytearray([field << 3 | 2])
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _feature_parts(values: np.ndarray) -> list[bytes]:
    """Pieces of one serialized Feature: floats -> float_list (float32), integers/bools -> int64_list."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        field, payload = 2, np.ascontiguousarray(values, "<f4").tobytes()
    elif values.dtype.kind in "biu":
        field = 3
        payload = encode_varints(values.view(np.int64) if values.dtype == np.uint64 else values)
    else:
        raise TypeError(f"cannot encode {values.dtype} as a tf.train.Feature (plain Tensor features only)")
    if not payload:
        return [_header(field, 0)]
    run = _header(1, len(payload))
    return [_header(field, len(run) + len(payload)), run, payload]


def encode_feature(values: np.ndarray) -> bytes:
    """One serialized Feature (see `_feature_parts`)."""
    return b"".join(_feature_parts(values))


def encode_example(features: Mapping[str, np.ndarray]) -> bytes:
    """{key: array} -> a serialized tf.train.Example (keys in sorted order, values flattened; each
    payload is copied once, into the result)."""
    parts: list[bytes] = []
    for key in sorted(features):
        k = key.encode()
        value = _feature_parts(features[key])
        size = sum(map(len, value))
        head = _header(1, len(k)) + k + _header(2, size)
        parts += [_header(1, len(head) + size), head, *value]
    return b"".join([_header(1, sum(map(len, parts))), *parts])


def example_from_features(features: Mapping[str, Any]) -> bytes:
    """{key: serialized Feature (bytes or a view)} -> a serialized tf.train.Example (keys sorted)."""
    parts: list = []
    for key in sorted(features):
        k, value = key.encode(), features[key]
        head = _header(1, len(k)) + k + _header(2, len(value))
        parts += [_header(1, len(head) + len(value)), head, value]
    return b"".join([_header(1, sum(map(len, parts))), *parts])


def encode_bytes_feature(values) -> bytes:
    """[bytes value, ...] -> one serialized Feature holding them as a bytes_list."""
    inner = b"".join(_header(1, len(v)) + bytes(v) for v in values)
    return _header(1, len(inner)) + inner
