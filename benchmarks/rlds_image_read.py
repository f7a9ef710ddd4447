"""The cost of decoding Image features in the TF-free loader: PNG frames vs the same frames as raw Tensors.

    .venv/bin/python benchmarks/rlds_image_read.py --steps 20000 --window 16 --batch-size 32

Writes Atari-like frames (84x84x4 uint8 frame stacks: a flat background with a few moving blocks)
with tfds's own builder as PNG Images in ArrayRecord (--unique-episodes of --episode-steps, repeated
to --steps: tfds encodes PNGs slowly), and the same frames two more ways: as a plain uint8 Tensor
(int64 varints, as tfds and rillet's writer store a Tensor) and after `rillet dataset convert
--decode-images` (raw pixel bytes, decoded once). Each is read once as
batched windows through the Grain loader (--repeats times, interleaved, the best kept); datasets are
opened before the clock starts. Prints steps/s, disk sizes, the decode cost per frame, the conversion
time, and the ratios PNG-in-loader / varint Tensor and (last) PNG-in-loader / raw bytes.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds

SHAPE = (84, 84, 4)


def frames(n: int, seed: int) -> np.ndarray:
    """[n, 84, 84, 4] uint8: stacks of 4 consecutive frames of blocks moving over a flat background."""
    rng = np.random.default_rng(seed)
    single = np.full((n + 3, 84, 84), 40, np.uint8)
    pos, vel = rng.integers(0, 76, (6, 2)), rng.choice([-2, -1, 1, 2], (6, 2))
    for t in range(n + 3):
        pos = (pos + vel) % 76
        for k, (y, x) in enumerate(pos):
            single[t, y:y + 8, x:x + 8] = 80 + 25 * k
    return np.stack([single[i:i + n] for i in range(4)], axis=-1)


class AtariLikeFrames(tfds.core.GeneratorBasedBuilder):
    """LENGTHS episodes of `frames` as PNG Images (tfds's own writer)."""

    VERSION = tfds.core.Version("1.0.0")
    LENGTHS: list = []

    def _info(self):
        steps = {"observation": tfds.features.Image(shape=SHAPE, encoding_format="png"), "action": np.int32,
                 "reward": np.float32, "discount": np.float32, "is_first": np.bool_, "is_last": np.bool_,
                 "is_terminal": np.bool_}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"steps": tfds.features.Dataset(steps)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, n in enumerate(self.LENGTHS):
            obs = frames(n, i)
            yield i, {"steps": [{"observation": obs[t], "action": t % 4, "reward": np.float32(t % 7 == 0),
                                 "discount": np.float32(1), "is_first": t == 0, "is_last": t == n - 1,
                                 "is_terminal": t == n - 1} for t in range(n)]}


def write_png(data_dir: str, lengths) -> str:
    """The PNG dataset (tfds ArrayRecord, one split); returns its directory."""
    AtariLikeFrames.LENGTHS = list(lengths)
    builder = AtariLikeFrames(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return str(builder.data_dir)


def copy(src: str, out: str, repeat: int, encoding: str | None) -> str:
    """`src`'s episodes `repeat` times over, images as they are (None) or decoded once into uint8 Tensors
    of `encoding` ("none": int64 varints, as tfds writes a Tensor; "bytes": raw pixels, what
    convert --decode-images writes)."""
    from rillet.pipelines import dataset_cli

    info = dataset_cli._info(src)
    records = lambda: (r for _ in range(repeat) for r in dataset_cli._records(src, info, "train"))  # noqa: E731
    dataset_cli._build(out, src, {"train": records}, "array_record", {}, 1000, image_encoding=encoding)
    return out


def read_rate(path: str, args) -> tuple[float, int]:
    """(steps/s over every window once, steps read)."""
    from rillet.datasets.rlds_loader import rlds

    it = rlds(path, transform="windows", window=args.window, batch_size=args.batch_size, seed=0,
              worker_count=args.workers, read_threads=args.read_threads)
    t0, steps = time.perf_counter(), 0
    for b in it:
        steps += b["mask"].size
    return steps / (time.perf_counter() - t0), steps


def disk_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--episode-steps", type=int, default=500)
    p.add_argument("--unique-episodes", type=int, default=4)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--read-threads", type=int, default=2, help="grain read threads (decode chunks in parallel)")
    args = p.parse_args()
    from rillet.pipelines.dataset_cli import convert

    tmp = tempfile.mkdtemp()
    unique = write_png(os.path.join(tmp, "unique"), [args.episode_steps] * args.unique_episodes)
    repeat = max(1, args.steps // (args.episode_steps * args.unique_episodes))
    png = copy(unique, os.path.join(tmp, "png"), repeat, None)
    raw = copy(unique, os.path.join(tmp, "raw"), repeat, "none")
    frames_n = repeat * args.unique_episodes * args.episode_steps
    t0 = time.perf_counter()
    decoded = os.path.join(tmp, "decoded")
    convert(png, decoded, to="array_record", decode_images=True)
    convert_s = time.perf_counter() - t0
    names = {"raw Tensor (int64 varints)": raw, "PNG Image, decoded in the loader": png,
             "PNG after convert --decode-images": decoded}
    rates = {name: 0.0 for name in names}
    for _ in range(args.repeats):  # interleaved; the best of each
        for name, path in names.items():
            rate, steps = read_rate(path, args)
            rates[name] = max(rates[name], rate)
    for name, path in names.items():
        print(f"{name:36s}: {rates[name]:10,.0f} steps/s ({steps} window steps, {disk_mb(path):7.1f} MB on disk)")
    r_varint, r_png, r_bytes = rates.values()
    print(f"PNG decode cost in the loader: {1e6 * (1 / r_png - 1 / r_bytes):.1f} us per 84x84x4 frame over raw "
          f"bytes (windows {args.window}, batch {args.batch_size}, workers {args.workers}, "
          f"read threads {args.read_threads}, best of {args.repeats})")
    print(f"convert --decode-images: {convert_s:.1f} s for {frames_n} frames "
          f"({1e6 * convert_s / frames_n:.0f} us per frame, once)")
    print(f"ratio PNG-in-loader / int64-varint Tensor: {r_png / r_varint:.2f}")
    print(f"ratio PNG-in-loader / raw-bytes Tensor (convert --decode-images): {r_png / r_bytes:.2f}")


if __name__ == "__main__":
    main()
