"""rlds_encoding: the tf.train.Example wire format, written and read without protobuf objects."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

from rillet.datasets import rlds_encoding as E
from rillet.datasets import rlds_transforms as T
from rillet.datasets.rlds_writer import step_features
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import SpecMismatchError

DTYPES = ["float32", "float64", "int32", "int64", "uint8", "uint64", "bool"]


def random_values(rng, dtype, shape):
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith("float"):
        return (rng.normal(size=shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def flat(steps):
    out = {f"steps/{k}": v for k, v in steps.items() if k != "extras"}
    out.update({f"steps/extras/{k}": v for k, v in steps.get("extras", {}).items()})
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.lists(st.sampled_from(DTYPES), min_size=1, max_size=3),
       st.integers(0, 2**31), st.sampled_from([(), (2,), (3, 2)]))
def test_encoder_matches_tfds_serializer_and_decoders_agree(length, extra_dtypes, seed, obs_shape):
    rng = np.random.default_rng(seed)
    spec = StepSpec(ArraySpec(obs_shape, "float32"), ArraySpec((), "int32"), num_actions=4,
                    extras={f"e{i}": ArraySpec((2,), d) for i, d in enumerate(extra_dtypes)})
    steps = {k: random_values(rng, s.dtype, (length,) + s.shape) for k, s in spec.fields().items() if k != "extras"}
    steps["extras"] = {k: random_values(rng, s.dtype, (length,) + s.shape) for k, s in spec.extras.items()}
    features = step_features(spec)
    want = example_serializer.ExampleSerializer(features.get_serialized_info()).serialize_example(
        features.encode_example({"steps": steps}))
    got = E.encode_example(flat(steps))
    assert tf_example_pb2.Example.FromString(got) == tf_example_pb2.Example.FromString(want)

    layout = {k: v for k, v in spec.fields().items() if k != "extras"}
    layout.update({f"extras/{k}": v for k, v in spec.extras.items()})
    one = T.decode_episode(want, layout)
    for small, large in ((1024, 1 << 14), (0, 0)):  # vectorised headers + upb; per-feature views
        columns = E.serialized_features([want, got], [f"steps/{k}" for k in layout], large=large)
        for (name, s), raws in zip(layout.items(), columns):
            kind, payload = E.join_packed(raws, small=small)
            values = E.decode_values(kind, payload, s.np_dtype).reshape((2, length) + s.shape)
            ref = one["extras"][name[7:]] if name.startswith("extras/") else one[name]
            expect = ref if s.dtype != "float64" else ref.astype(np.float32).astype(np.float64)
            np.testing.assert_array_equal(values[0], expect, err_msg=name)
            np.testing.assert_array_equal(values[1], expect, err_msg=name)


def test_varints_round_trip():
    values = np.array([0, 1, 127, 128, 300, 2**35, 2**63 - 1, -1, -(2**63), -300], np.int64)
    enc = E.encode_varints(values)
    feat = tf_feature_pb2.Feature()
    feat.int64_list.value.extend(values.tolist())
    assert E.feature_segments(feat.SerializeToString()) == ("int64_list", [enc])
    np.testing.assert_array_equal(E.decode_varints(enc), values)
    assert E.encode_varints(np.array([True, False])) == b"\x01\x00"
    with pytest.raises(E.WireFormatError, match="end inside"):
        E.decode_varints(b"\x01\x80")


def example_of(features):
    ex = tf_example_pb2.Example()
    for key, feat in features.items():
        ex.features.feature[key].CopyFrom(feat)
    return ex.SerializeToString()


def test_unusual_encodings_fall_back_and_still_decode():
    """Unpacked values, split packed runs and bytes lists (valid protobuf that tfds never writes)."""
    obs = np.arange(6, dtype=np.float32)
    unpacked = b"".join(b"\x0d" + v.tobytes() for v in obs)  # FloatList, one fixed32 per value
    split_ints = b"\x0a\x01\x05" + b"\x0a\x02\x07\x01" + b"\x08\x02"  # two packed runs + one unpacked
    raw_obs = b"\x12" + bytes([len(unpacked)]) + unpacked
    raw_act = b"\x1a" + bytes([len(split_ints)]) + split_ints
    kind, segs = E.feature_segments(raw_obs)
    np.testing.assert_array_equal(E.decode_values(kind, b"".join(segs), np.float32), obs)
    kind, segs = E.feature_segments(raw_act)
    np.testing.assert_array_equal(E.decode_values(kind, b"".join(segs), np.int64), [5, 7, 1, 2])
    assert E.join_packed([raw_obs, raw_obs]) is None and E.join_packed([raw_act]) is None

    f = tf_feature_pb2.Feature
    flags = f()
    flags.bytes_list.value.extend([b"\x01", b"\x00"])
    record = example_of({"steps/observation": f.FromString(raw_obs), "steps/action": f.FromString(raw_act),
                         "steps/flag": flags})
    layout = {"observation": ArraySpec((3,), "float32"), "action": ArraySpec((2,), "int32"),
              "flag": ArraySpec((), "bool")}
    cols = T.decode_columns([record, record], layout, np.array([2, 2]))
    np.testing.assert_array_equal(cols["observation"], np.concatenate([obs, obs]).reshape(4, 3))
    np.testing.assert_array_equal(cols["action"], [[5, 7], [1, 2], [5, 7], [1, 2]])
    np.testing.assert_array_equal(cols["flag"], [True, False] * 2)


def test_malformed_records_raise_one_clear_error():
    layout = {"reward": ArraySpec((), "float32")}
    good = E.encode_example({"steps/reward": np.ones(3, np.float32)})
    for bad in (good[:-5], b"\x0a\xff\xff\x01", b"\x0b"):
        with pytest.raises(SpecMismatchError, match="not a valid tf.train.Example|corrupt"):
            T.decode_columns([good, bad], layout, np.array([3, 3]))
        with pytest.raises(SpecMismatchError, match="not a valid tf.train.Example|corrupt"):
            T.decode_episode(bad, layout)
        with pytest.raises(E.WireFormatError):  # the walker for large records
            E.serialized_features([bad], ["steps/reward"], large=0)
    with pytest.raises(SpecMismatchError, match="lacks feature 'steps/reward'"):
        T.decode_columns([good, E.encode_example({"steps/other": np.ones(3)})], layout, np.array([3, 3]))
    with pytest.raises(SpecMismatchError, match="episode index lists 7"):
        T.decode_columns([good, good], layout, np.array([3, 4]))
