"""A small RLDS dataset written by tfds's own builder (GeneratorBasedBuilder.download_and_prepare), with
step features of every kind public RLDS datasets use: nested observation dicts of PNG (RGB, uint16
depth) and JPEG images and a float64 Tensor, Scalars, an int16 action vector, Text, a string Tensor,
zlib- and bytes-encoded Tensors, a ClassLabel, and episode metadata; two splits; TFRecord or ArrayRecord."""

import numpy as np
import tensorflow_datasets as tfds

F = tfds.features
H, W = 8, 6


def features() -> F.FeaturesDict:
    return F.FeaturesDict({
        "steps": F.Dataset({
            "observation": {"image": F.Image(shape=(H, W, 3), encoding_format="png"),
                            "wrist": F.Image(shape=(H, W, 1), encoding_format="jpeg"),
                            "depth": F.Image(shape=(H, W, 1), dtype=np.uint16, encoding_format="png"),
                            "state": F.Tensor(shape=(2,), dtype=np.float64)},
            "action": F.Tensor(shape=(2,), dtype=np.int16), "reward": F.Scalar(dtype=np.float32),
            "discount": F.Scalar(dtype=np.float32), "is_first": np.bool_, "is_last": np.bool_,
            "is_terminal": np.bool_, "language_instruction": F.Text(),
            "packed": F.Tensor(shape=(3,), dtype=np.uint8, encoding="zlib"),
            "raw": F.Tensor(shape=(2,), dtype=np.int32, encoding="bytes"),
            "tag": F.Tensor(shape=(), dtype=np.str_), "phase": F.ClassLabel(num_classes=3)}),
        "episode_metadata": {"file_path": F.Text(), "id": np.int32, "success": np.bool_}})


def episode(i: int, length: int, rng) -> dict:
    """One episode of `length` steps (metadata: id i, success for even i), as tfds takes it."""
    smooth = np.linspace(0, 255, H * W * 3).reshape(H, W, 3).astype(np.uint8)  # JPEG-friendly
    steps = [{
        "observation": {"image": rng.integers(0, 256, (H, W, 3), np.uint8),
                        "wrist": np.roll(smooth[..., :1], t + i, axis=1),
                        "depth": rng.integers(0, 65536, (H, W, 1), np.uint16),
                        "state": rng.normal(size=2)},
        "action": np.int16([t, -300 * t]), "reward": np.float32(t + i), "discount": np.float32(t < length - 1),
        "is_first": t == 0, "is_last": t == length - 1, "is_terminal": t == length - 1,
        "language_instruction": f"pick block {i}", "packed": np.uint8([i, t, 200]),
        "raw": np.int32([-t, 1 << 20]), "tag": f"t{t}", "phase": t % 3,
    } for t in range(length)]
    return {"steps": steps, "episode_metadata": {"file_path": f"/data/ep{i}", "id": i, "success": i % 2 == 0}}


class ForeignRlds(tfds.core.GeneratorBasedBuilder):
    """Writes EPISODES {split: [episode, ...]} with `features()`."""

    VERSION = tfds.core.Version("1.0.0")
    EPISODES: dict = {}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=features())

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(eps) for split, eps in self.EPISODES.items()}

    def _generate_examples(self, eps):
        for i, ep in enumerate(eps):
            yield i, ep


def write_foreign(data_dir, file_format: str, splits=(("train", (3, 5, 2)), ("test", (4,))), seed: int = 0):
    """Writes the dataset under data_dir; returns (its version directory, {split: [episode, ...]})."""
    rng = np.random.default_rng(seed)
    episodes, i = {}, 0
    for split, lengths in splits:
        episodes[split] = []
        for length in lengths:
            episodes[split].append(episode(i, length, rng))
            i += 1
    ForeignRlds.EPISODES = episodes
    builder = ForeignRlds(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare()
    return str(builder.data_dir), episodes


def stacked(steps: list, path: str) -> np.ndarray:
    """[L, ...]: the value at `path` ("observation/image") of every step dict."""
    out = []
    for s in steps:
        for p in path.split("/"):
            s = s[p]
        out.append(s)
    return np.stack([np.asarray(x) for x in out])


def leaves(tree: dict, prefix: str = "") -> dict:
    """{"a/b": array} of a nested dict of arrays."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(leaves(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out
