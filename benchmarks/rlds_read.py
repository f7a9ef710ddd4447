"""Reader throughput: the Grain loader (batched windows) vs tfds as_dataset + rlds batching.

    .venv/bin/python benchmarks/rlds_read.py --steps 200000 --window 32 --batch-size 256
    .venv/bin/python benchmarks/rlds_read.py --image

Default: random CartPole episodes (ArrayRecord for Grain, the same records converted to TFRecord for
tf.data). --image: Atari-sized frames (observation 84x84x4 uint8, rlds_image_read.py's frames) written
by tfds's own builder as PNG Images, repeated to --steps (default 20000, batch 32); --image-encoding raw
stores them decoded once as raw uint8 bytes (convert --decode-images), png keeps the PNGs (decoded while
reading), both (default) measures each and the PNG decode cost. Every dataset is read as batched
windows (window and batch size alike on both sides) by the Grain loader from ArrayRecord and by tfds
`builder_from_directory(...).as_dataset` from the same records converted to TFRecord, --repeats times
each in turns, the best kept. Both pipelines are built before their clock starts (imports, opening
shards, tracing); the clock covers iterating every batch. Each line also gives steps per CPU second of
this process (all threads): the steadier figure on a machine shared with other jobs. Prints the ratios
(grain / tf.data) last.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def grain_rate(path: str, args) -> tuple[float, float, int]:
    """(steps/s, steps per CPU second of this process, window steps read) over every window of `path`
    once, Grain loader."""
    from rillet.datasets.rlds_loader import rlds

    it = rlds(path, transform="windows", window=args.window, batch_size=args.batch_size, seed=0,
              worker_count=args.workers, read_threads=args.read_threads)
    t0, c0, steps = time.perf_counter(), time.process_time(), 0
    for b in it:
        steps += b["mask"].size
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0), steps


def tf_rate(path: str, args) -> tuple[float, float, int]:
    """(steps/s, steps per CPU second, window steps read) over every window of `path` once: tfds as_dataset,
    episodes windowed by rlds.transformations.batch in parallel (interleave), padded batches, prefetch; no
    Python per step."""
    import rlds as rlds_lib
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def windows(ep):
        return rlds_lib.transformations.batch(ep["steps"], size=args.window, shift=args.window, drop_remainder=False)

    ds = tfds.builder_from_directory(path).as_dataset(split="train")
    ds = ds.interleave(windows, cycle_length=args.tf_cycle, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.padded_batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    it = iter(ds.as_numpy_iterator())
    t0, c0, steps = time.perf_counter(), time.process_time(), 0
    for b in it:
        steps += b["reward"].size
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0), steps


def cartpole_data(tmp: str, args) -> dict[str, tuple[str, str]]:
    """{"CartPole": (ArrayRecord dir, TFRecord dir)} of random CartPole episodes (~args.steps steps)."""
    from rillet.pipelines.dataset_cli import convert, generate

    ar, tfr = os.path.join(tmp, "ar"), os.path.join(tmp, "tfr")
    episodes = max(1, args.steps // 22)  # a random CartPole episode has ~22 steps
    generate("CartPole-v1", ar, episodes=episodes, num_envs=16, max_episode_steps=args.max_episode_steps,
             progress=False)
    convert(ar, tfr, to="tfrecord")
    return {"CartPole": (ar, tfr)}


def image_data(tmp: str, args) -> dict[str, tuple[str, str]]:
    """{"raw"/"png": (ArrayRecord dir, TFRecord dir)}: 84x84x4 frames as raw bytes Tensors and/or PNG Images."""
    from rlds_image_read import copy, write_png

    from rillet.pipelines.dataset_cli import convert

    unique = write_png(os.path.join(tmp, "unique"), [args.episode_steps] * args.unique_episodes)
    repeat = max(1, args.steps // (args.episode_steps * args.unique_episodes))
    out = {}
    for enc in (["raw", "png"] if args.image_encoding == "both" else [args.image_encoding]):
        ar = copy(unique, os.path.join(tmp, enc), repeat, "bytes" if enc == "raw" else None)
        convert(ar, os.path.join(tmp, enc + "_tfr"), to="tfrecord")
        out[enc] = (ar, os.path.join(tmp, enc + "_tfr"))
    return out


def measure(data: dict[str, tuple[str, str]], args) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{name: {"grain"/"tf.data": (best steps/s, best steps per CPU s, window steps)}}: every dataset read
    --repeats times by each side, in turns (the order reversed every round), the best of each kept."""
    best = {name: {} for name in data}
    for r in range(args.repeats):
        for name, (ar, tfr) in data.items():
            sides = [("grain", lambda: grain_rate(ar, args)), ("tf.data", lambda: tf_rate(tfr, args))]
            for side, run in sides[::-1] if r % 2 else sides:
                wall, cpu, steps = run()
                old = best[name].get(side, (0.0, 0.0, steps))
                best[name][side] = (max(old[0], wall), max(old[1], cpu), steps)
    return best


def report(best: dict, args) -> None:
    """Prints each side's rates, the PNG decode cost (with both encodings) and, last, the ratios."""
    for name, sides in best.items():
        for side, (wall, cpu, steps) in sides.items():
            how = (f"grain loader (workers {args.workers}, read threads {args.read_threads})" if side == "grain"
                   else f"tfds as_dataset + rlds.transformations.batch (interleave {args.tf_cycle})")
            print(f"{name:8s} {how:60s}: {wall:10,.0f} steps/s, {cpu:10,.0f} steps per CPU s ({steps} window "
                  f"steps of {args.window}, batch {args.batch_size}, best of {args.repeats})")
    if {"raw", "png"} <= set(best):
        for side in ("grain", "tf.data"):
            raw, png = best["raw"][side][0], best["png"][side][0]
            print(f"PNG decode cost, {side}: png/raw {png / raw:.2f} ({1e6 * (1 / png - 1 / raw):.0f} us per frame)")
    ratio = {n: (s["grain"][0] / s["tf.data"][0], s["grain"][1] / s["tf.data"][1]) for n, s in best.items()}
    print("ratio grain/tf.data (steps/s; per CPU s): "
          + ", ".join(f"{n} {w:.2f}; {c:.2f}" for n, (w, c) in ratio.items()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=None, help="default 200000; --image: 20000")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=None, help="default 256; --image: 32")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--read-threads", type=int, default=None, help="grain read threads (default 16; --image: 2)")
    p.add_argument("--tf-cycle", type=int, default=4, help="tf.data episodes windowed in parallel (interleave)")
    p.add_argument("--repeats", type=int, default=2, help="reads of each dataset by each side; the best kept")
    p.add_argument("--max-episode-steps", type=int, default=0, help="0: CartPole's 500")
    p.add_argument("--image", action="store_true", help="84x84x4 uint8 frames instead of CartPole")
    p.add_argument("--image-encoding", choices=["raw", "png", "both"], default="both")
    p.add_argument("--episode-steps", type=int, default=500, help="--image: steps per episode")
    p.add_argument("--unique-episodes", type=int, default=4, help="--image: distinct episodes (tfds encodes slowly)")
    args = p.parse_args()
    args.steps = args.steps or (20_000 if args.image else 200_000)
    args.batch_size = args.batch_size or (32 if args.image else 256)
    args.read_threads = args.read_threads or (2 if args.image else 16)
    with tempfile.TemporaryDirectory() as tmp:
        data = image_data(tmp, args) if args.image else cartpole_data(tmp, args)
        report(measure(data, args), args)


if __name__ == "__main__":
    main()
