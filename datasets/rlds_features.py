"""The features of a TFDS/RLDS dataset as rillet reads them: kinds, shapes, encodings and their decoders.

    layout, episode = step_and_episode_layouts(path)   # from features.json
    layout["observation/image"] == Feature("image", (84, 84, 1), "uint8", "png")
    layout["reward"] == ArraySpec((), "float32")       # plain Tensor/Scalar/ClassLabel: packed lists
    decode_segments(feature, segments, where)          # [N bytes values] -> [N, *shape]

Where the decoding happens (issue 21): the TF-free reader decodes every feature itself, in the Grain
hot path, so a dataset that tfds or rlds wrote as ArrayRecord loads as it is, and `rillet dataset
convert` only has to change the container (TFRecord -> ArrayRecord) and, when asked
(``--decode-images``), to store images as raw uint8 Tensors once. Decoding in the reader keeps the
data on disk as compact as its authors made it (PNG frames are 3-10x smaller than raw ones) and
needs no second copy of a public dataset; its cost is the image decode (Pillow, already installed
with matplotlib; no TensorFlow), measured by ``benchmarks/rlds_image_read.py`` against the same
frames stored raw. Where that ratio matters (small frames, many epochs), convert once.

Kinds: plain Tensor / Scalar / ClassLabel of a numeric or bool dtype (an `ArraySpec`: packed
float/int64 lists, the fast path); and `Feature`s read from bytes lists: "image" (PNG, JPEG, or any
format Pillow reads when the dataset names none; uint8 or uint16), "text" and string Tensors
(numpy object arrays of bytes, as tfds gives them), Tensors with encoding "bytes" or "zlib".
Shapes with an unknown (None) dimension, and other feature kinds (Video, Audio, BBox, nested
Sequence), raise `UnsupportedFeatureError`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zlib
from typing import Any, Mapping

import numpy as np

from rillet.datasets.specs import ArraySpec
from rillet.errors import SpecMismatchError

_IMAGE_MODES = {(1, "uint8"): "L", (3, "uint8"): "RGB", (4, "uint8"): "RGBA", (1, "uint16"): "I;16"}


class UnsupportedFeatureError(SpecMismatchError):
    """A dataset feature the TF-free reader cannot decode (kind, dtype or shape)."""


@dataclasses.dataclass(frozen=True)
class Feature:
    """A feature stored as one bytes value per element: kind "image" | "text" | "tensor", the decoded
    value's shape (per step) and numpy dtype ("object" for bytes), and its encoding ("png", "jpeg",
    "auto" for images; "utf-8" for text; "none" (string tensors), "bytes" or "zlib" for tensors)."""

    kind: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def spec(self) -> ArraySpec:
        return ArraySpec(self.shape, self.dtype)

    @property
    def values_per_row(self) -> int:
        """Bytes values per step: one per element for strings/text, one per step otherwise."""
        return math.prod(self.shape) if self.dtype == "object" else 1


def array_spec(f: ArraySpec | Feature) -> ArraySpec:
    """The decoded value's ArraySpec of a layout entry."""
    return f.spec if isinstance(f, Feature) else f


def describe(f: ArraySpec | Feature, python_class: str = "") -> dict:
    """{"type", "shape", "dtype", "encoding"} of a layout entry (for inspect and the dataset card)."""
    if isinstance(f, Feature):
        return {"type": f.kind, "shape": list(f.shape), "dtype": "string" if f.dtype == "object" else f.dtype,
                "encoding": f.encoding}
    kind = python_class.rsplit(".", 1)[-1].lower() if python_class else "tensor"
    return {"type": kind, "shape": list(f.shape), "dtype": f.dtype, "encoding": "none"}


def _dims(node: Mapping, path: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in node.get("shape", {}).get("dimensions", []))
    if any(d < 0 for d in dims):
        raise UnsupportedFeatureError(
            f"feature '{path}' has an unknown (None) dimension in its shape {dims}; the TF-free reader needs "
            "fixed shapes. Re-export the dataset with fixed shapes (resize or pad), or read it with tfds.")
    return dims


def _tensor(t: Mapping, path: str) -> ArraySpec | Feature:
    dims, dtype, enc = _dims(t, path), t["dtype"], t.get("encoding", "none")
    if dtype == "string":
        if enc != "none":
            raise UnsupportedFeatureError(f"feature '{path}': string Tensor with encoding {enc!r} is not supported.")
        return Feature("tensor", dims, "object", "none")
    try:
        np.dtype(dtype)
    except TypeError:
        raise UnsupportedFeatureError(f"feature '{path}' has dtype {dtype!r}, which numpy does not know; "
                                      "re-export it as a numeric dtype.") from None
    if enc == "none":
        return ArraySpec(dims, dtype)
    if enc in ("bytes", "zlib"):
        return Feature("tensor", dims, dtype, enc)
    raise UnsupportedFeatureError(f"feature '{path}': Tensor encoding {enc!r} is not supported "
                                  "(only 'none', 'bytes' and 'zlib').")


def _image(im: Mapping, path: str) -> Feature:
    dims, dtype = _dims(im, path), im.get("dtype", "uint8")
    fmt = (im.get("encodingFormat") or "auto").lower()
    if len(dims) != 3 or (dims[-1], dtype) not in _IMAGE_MODES or fmt not in ("png", "jpeg", "auto"):
        raise UnsupportedFeatureError(
            f"feature '{path}': Image of shape {dims}, dtype {dtype}, format {fmt} is not supported; the reader "
            "decodes PNG/JPEG images [H, W, 1|3|4] uint8 and [H, W, 1] uint16. Re-export it, or read it with tfds.")
    return Feature("image", dims, dtype, fmt)


def leaf(node: Mapping[str, Any], path: str) -> ArraySpec | Feature:
    """One features.json leaf -> its layout entry; UnsupportedFeatureError for other kinds."""
    if "tensor" in node:
        return _tensor(node["tensor"], path)
    if "image" in node:
        return _image(node["image"], path)
    if "text" in node:
        return Feature("text", (), "object", "utf-8")
    if "classLabel" in node:
        return ArraySpec((), "int64")
    kind = node.get("pythonClassName", "?").rsplit(".", 1)[-1]
    raise UnsupportedFeatureError(
        f"feature '{path}' is a {kind}, which the TF-free reader does not decode (it reads Tensor, Scalar, "
        "ClassLabel, Image (PNG/JPEG), Text and dicts of these). Drop or re-export that feature, or read the "
        "dataset with tfds.builder_from_directory(path).as_dataset().")


def flatten(node: Mapping[str, Any], prefix: str, out: dict, classes: dict | None = None) -> None:
    """FeaturesDict node -> out {"a/b": ArraySpec | Feature} (classes: {"a/b": pythonClassName})."""
    feats = node.get("featuresDict", {}).get("features")
    if feats is None:
        raise SpecMismatchError(f"feature '{prefix}' is not a FeaturesDict: {sorted(node)}.")
    for name, f in feats.items():
        path = f"{prefix}/{name}" if prefix else name
        if "featuresDict" in f:
            flatten(f, path, out, classes)
        else:
            out[path] = leaf(f, path)
            if classes is not None:
                classes[path] = f.get("pythonClassName", "")


def _image_array(value, f: Feature, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(value))
        if f.encoding != "auto" and im.format != f.encoding.upper():
            raise OSError(f"a {im.format} image where the features say {f.encoding}")
        mode = _IMAGE_MODES[(f.shape[-1], f.dtype)]
        if im.mode != mode and not (mode == "I;16" and im.mode.startswith("I")):
            im = im.convert(mode)
        arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise SpecMismatchError(f"{where}: an image does not decode ({e}); the shard is corrupt.") from None
    if arr.size != math.prod(f.shape):
        raise SpecMismatchError(f"{where}: an image of shape {arr.shape} where the features say {f.shape}; the "
                                "reader needs every image at the declared size.")
    return arr.reshape(f.shape)


def decode_segments(f: Feature, segments: list, where: str) -> np.ndarray:
    """Bytes values of one feature (`Feature.values_per_row` per step) -> [N, *shape] of its dtype."""
    n = len(segments) // f.values_per_row
    if f.kind == "image":
        out = np.empty((n,) + f.shape, f.np_dtype)
        for i, value in enumerate(segments):
            out[i] = _image_array(value, f, where)
        return out
    if f.dtype == "object":
        out = np.empty(len(segments), object)
        out[:] = [bytes(v) for v in segments]
        return out.reshape((n,) + f.shape)
    try:
        raw = b"".join(zlib.decompress(v) for v in segments) if f.encoding == "zlib" else b"".join(segments)
        return np.frombuffer(raw, f.np_dtype).reshape((n,) + f.shape)
    except (zlib.error, ValueError) as e:
        raise SpecMismatchError(f"{where}: {f.encoding}-encoded values do not make {n} tensors of shape "
                                f"{f.shape} {f.dtype} ({e}); the shard is corrupt.") from None


def image_to_tensor(node: Mapping[str, Any], encoding: str = "bytes") -> Mapping[str, Any]:
    """A features.json Image leaf -> the Tensor leaf of its decoded pixels: raw bytes per step (encoding
    "bytes", for convert --decode-images) or packed int64 varints ("none"); tfds reads both."""
    if "image" not in node:
        return node
    im = node["image"]
    return {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
            "tensor": {"shape": im.get("shape", {}), "dtype": im.get("dtype", "uint8"), "encoding": encoding}}


def decode_images(record: bytes, layout: Mapping[str, ArraySpec | Feature], where: str,
                  encoding: str = "bytes") -> bytes:
    """A serialized episode with every Image step feature of `layout` replaced by its pixels, stored as
    `image_to_tensor(..., encoding)` says; every other feature is copied as it is."""
    from rillet.datasets.rlds_encoding import (WireFormatError, encode_bytes_feature, encode_feature,
                                               example_from_features, feature_segments, feature_views)

    try:
        feats = dict(feature_views(record))
    except (WireFormatError, IndexError, UnicodeDecodeError) as e:
        raise SpecMismatchError(f"a record in '{where}' is not a valid tf.train.Example ({e}).") from None
    for name, f in layout.items():
        key = "steps/" + name
        if isinstance(f, Feature) and f.kind == "image" and key in feats:
            pixels = decode_segments(f, feature_segments(feats[key])[1], f"record in '{where}', '{key}'")
            feats[key] = (encode_bytes_feature([p.tobytes() for p in pixels]) if encoding == "bytes"
                          else encode_feature(pixels))
    return example_from_features(feats)


def map_leaves(node: Mapping[str, Any], fn) -> dict:
    """features.json tree with every leaf below FeaturesDicts and Dataset/Sequence nodes replaced by fn(leaf)."""
    if "featuresDict" in node:
        feats = {k: map_leaves(v, fn) for k, v in node["featuresDict"]["features"].items()}
        return {**node, "featuresDict": {**node["featuresDict"], "features": feats}}
    if "sequence" in node:
        return {**node, "sequence": {**node["sequence"], "feature": map_leaves(node["sequence"]["feature"], fn)}}
    return dict(fn(node))
