"""Datasets that tfds's own builder wrote (tfds_foreign.py: images, text, nested dicts, episode
metadata; TFRecord and ArrayRecord; two splits) read back through the TF-free reader and loader with
the values tfds gives, and `rillet dataset convert` / `inspect` on them."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from google.protobuf import json_format

from rillet.datasets.rlds_features import UnsupportedFeatureError
from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import rlds_episodes
from rillet.errors import ConfigError, SpecMismatchError
from rillet.pipelines.dataset_cli import convert, inspect
from tfds_foreign import leaves, stacked, write_foreign

EXACT_EXCEPT_JPEG = "observation/wrist"


@pytest.fixture(scope="module")
def array_record(tmp_path_factory):
    return write_foreign(tmp_path_factory.mktemp("ar"), "array_record")


@pytest.fixture(scope="module")
def tfrecord(tmp_path_factory):
    return write_foreign(tmp_path_factory.mktemp("tfr"), "tfrecord", seed=1)


def _want(steps: list, path: str) -> np.ndarray:
    want = stacked(steps, path)
    if want.dtype == np.float64:  # tfds stores float64 as float32 (a tf.train.Example float_list)
        return want.astype(np.float32).astype(np.float64)
    return want.astype(object) if want.dtype.kind == "U" else want


def _by_id(episodes: dict) -> dict:
    """{episode id: episode given to tfds} (tfds shuffles episodes within a split)."""
    return {ep["episode_metadata"]["id"]: ep for eps in episodes.values() for ep in eps}


def _check_episode(got: dict, source: dict) -> None:
    """got: rlds_episodes()[i]; source: the episodes given to tfds by id."""
    source = source[got["episode_metadata"]["id"]]
    flat = leaves(got["steps"])
    assert set(flat) - {"extras"} >= {"observation/image", "observation/wrist", "language_instruction", "tag"}
    for path, value in flat.items():
        want = _want(source["steps"], path)
        if want.dtype == object:
            want = np.array([w.encode() for w in want], object)
        if path == EXACT_EXCEPT_JPEG:  # lossy: near the pixels given
            assert value.shape == want.shape and np.abs(value.astype(int) - want).mean() < 8, path
        else:
            np.testing.assert_array_equal(value, want, err_msg=path)
            assert value.dtype == want.dtype or want.dtype == object, path
    meta = source["episode_metadata"]
    assert got["episode_metadata"] == {"file_path": meta["file_path"].encode(), "id": meta["id"],
                                       "success": meta["success"]}


def test_array_record_reads_every_feature_as_tfds_does(array_record):
    path, episodes = array_record
    for split in ("train", "test"):  # (tfds's own numpy reader needs OpenCV for uint16 images)
        source = rlds_episodes(path, split)
        assert len(source) == len(episodes[split])
        for i in range(len(source)):
            _check_episode(source[i], _by_id(episodes))


def _with_episode_id(cols: dict, offsets: np.ndarray) -> dict:
    """A `derive` transform that reads episode metadata (repeated per step under "episode")."""
    return {**cols, "extras": {**cols["extras"], "id_plus_one": cols["episode"]["episode_metadata"]["id"] + 1}}


def test_loader_batches_nested_images_text_and_metadata_filtered(array_record):
    path, episodes = array_record
    it = rlds(path, transform="windows", window=3, batch_size=2, shuffle=False, derive=_with_episode_id,
              episode_filter=lambda m: bool(m["episode_metadata"]["success"]))
    batches = list(it)  # train ids 0 (3 steps) and 2 (2 steps) succeed; 1 (5 steps) does not
    assert len(batches) == 1
    b, mask = batches[0]["steps"], batches[0]["mask"]
    assert b["observation"]["image"].shape == (2, 3, 8, 6, 3) and b["observation"]["depth"].dtype == np.uint16
    ids = b["episode"]["episode_metadata"]["id"][:, 0]
    assert sorted(ids) == [0, 2] and (mask.sum(1) == [3 if i == 0 else 2 for i in ids]).all()
    np.testing.assert_array_equal(b["extras"]["id_plus_one"][:, 0], ids + 1)  # metadata seen by `derive`
    assert b["language_instruction"].dtype == object and b["language_instruction"][list(ids).index(2), 2] == b""
    for j, i in enumerate(ids):
        want = _want(_by_id(episodes)[i]["steps"], "observation/image")
        np.testing.assert_array_equal(b["observation"]["image"][j, :len(want)], want)
    t = next(iter(rlds(path, split="test", transform="transitions", batch_size=3, shuffle=False)))
    steps = episodes["test"][0]["steps"]  # id 3, 4 steps
    np.testing.assert_array_equal(t["next_observation"]["depth"], _want(steps, "observation/depth")[1:])
    assert list(t["language_instruction"]) == [b"pick block 3"] * 3
    assert set(t["episode"]["episode_metadata"]["id"]) == {3}


def test_tfrecord_converts_and_reads_back_with_jpeg_near_tensorflow(tfrecord, tmp_path):
    path, episodes = tfrecord
    with pytest.raises(ConfigError, match="rillet dataset convert"):  # TFRecord has no random access
        rlds_episodes(path)
    card = convert(path, out=str(tmp_path / "ar"), to="array_record")
    assert card["features"]["steps/observation/wrist"] == {"type": "image", "shape": [8, 6, 1], "dtype": "uint8",
                                                           "encoding": "jpeg"}
    for split in ("train", "test"):
        source = rlds_episodes(str(tmp_path / "ar"), split)
        for i in range(len(source)):
            _check_episode(source[i], _by_id(episodes))
    ref = next(iter(tfds.as_numpy(tfds.builder_from_directory(path).as_dataset(split="test"))))
    wrist = np.stack([s["observation"]["wrist"] for s in ref["steps"]])  # TensorFlow's JPEG decoder
    got = source[0]["steps"]["observation"]["wrist"]  # Pillow's (TF's default is the fast, coarser IDCT)
    assert np.abs(got.astype(int) - wrist).mean() < 8


def test_convert_decode_images_stores_pixels_tfds_still_reads(array_record, tmp_path):
    path, episodes = array_record
    out = str(tmp_path / "raw")
    card = convert(path, out=out, to="array_record", decode_images=True)
    assert card["features"]["steps/observation/image"] == {"type": "tensor", "shape": [8, 6, 3], "dtype": "uint8",
                                                           "encoding": "bytes"}
    decoded, original = rlds_episodes(out, "train"), rlds_episodes(path, "train")
    for i in range(len(decoded)):
        a, b = leaves(decoded[i]["steps"]), leaves(original[i]["steps"])
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ref = tfds.builder_from_directory(out).as_data_source()["test"][0]["steps"]  # tfds reads the raw pixels
    np.testing.assert_array_equal(np.stack([s["observation"]["depth"] for s in ref]),
                                  _want(episodes["test"][0]["steps"], "observation/depth"))


def test_inspect_lists_every_feature_with_type_shape_and_encoding(array_record, tmp_path, capsys):
    path, _ = array_record
    summary = inspect(path, split="test", histogram=str(tmp_path / "h.png"))
    f = summary["features"]
    assert f["steps/observation/image"]["encoding"] == "png" and f["steps/observation/depth"]["dtype"] == "uint16"
    assert f["steps/language_instruction"] == {"type": "text", "shape": [], "dtype": "string", "encoding": "utf-8"}
    assert f["steps/packed"]["encoding"] == "zlib" and f["steps/phase"]["type"] == "classlabel"
    assert f["steps/reward"]["type"] == "scalar" and f["episode_metadata/success"]["dtype"] == "bool"
    out = capsys.readouterr().out
    assert "<uint8 [8, 6, 3]>" in out and "b'pick block 3'" in out and "episode metadata" in out


@pytest.mark.parametrize("feature, message", [
    (tfds.features.Video(shape=(2, 8, 6, 3)), "is a Video"),
    (tfds.features.Tensor(shape=(None,), dtype=np.float32), r"unknown \(None\) dimension"),
    (tfds.features.Image(shape=(8, 6, 2)), r"Image of shape \(8, 6, 2\)"),
])
def test_unsupported_features_are_refused_with_what_to_do(array_record, tmp_path, feature, message):
    path, _ = array_record
    bad = str(tmp_path / "bad")
    shutil.copytree(path, bad)
    with open(os.path.join(bad, "features.json")) as f:
        top = json.load(f)
    step = top["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    step["extra"] = json.loads(json_format.MessageToJson(feature.to_proto()))  # as tfds writes features.json
    with open(os.path.join(bad, "features.json"), "w") as f:
        json.dump(top, f)
    with pytest.raises(UnsupportedFeatureError, match=message) as e:
        rlds_episodes(bad, "test")
    assert isinstance(e.value, SpecMismatchError) and "tfds" in str(e.value)
