"""Reader throughput: the Grain loader (batched windows) vs tfds as_dataset + rlds batching.

    .venv/bin/python benchmarks/rlds_read.py --steps 200000 --window 32 --batch-size 256

Generates random CartPole episodes (ArrayRecord for Grain, the same records converted to TFRecord
for tf.data), reads every window once with each and prints the ratio (grain / tf.data) last.
Both pipelines are built before their clock starts (imports, opening shards, tracing); the clock
covers iterating every batch. The grain line also gives this process's CPU seconds.
"""

import argparse
import os
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--max-episode-steps", type=int, default=0, help="0: CartPole's 500")
    args = p.parse_args()
    from rillet.datasets.rlds_loader import rlds
    from rillet.pipelines.dataset_cli import convert, generate

    tmp = tempfile.mkdtemp()
    ar, tfr = os.path.join(tmp, "ar"), os.path.join(tmp, "tfr")
    episodes = max(1, args.steps // 22)  # a random CartPole episode has ~22 steps
    generate("CartPole-v1", ar, episodes=episodes, num_envs=16, max_episode_steps=args.max_episode_steps,
             progress=False)
    convert(ar, tfr, to="tfrecord")

    it = rlds(ar, transform="windows", window=args.window, batch_size=args.batch_size, seed=0,
              worker_count=args.workers)
    t0, c0, steps, real = time.perf_counter(), time.process_time(), 0, 0
    for b in it:
        steps += b["mask"].size
        real += int(b["mask"].sum())
    grain_s, grain_cpu = time.perf_counter() - t0, time.process_time() - c0
    grain_rate = steps / grain_s

    import rlds as rlds_lib
    import tensorflow as tf
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(tfr).as_dataset(split="train")
    ds = ds.flat_map(lambda ep: rlds_lib.transformations.batch(ep["steps"], size=args.window, shift=args.window,
                                                               drop_remainder=False))
    ds = ds.padded_batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    t0, tf_steps = time.perf_counter(), 0
    for b in ds.as_numpy_iterator():
        tf_steps += b["reward"].shape[0] * args.window
    tf_s = time.perf_counter() - t0
    tf_rate = tf_steps / tf_s
    print(f"grain loader (windows {args.window}, batch {args.batch_size}, workers {args.workers}): "
          f"{grain_rate:12,.0f} steps/s ({steps} window steps, {real} of them real, {grain_s:.2f} s, "
          f"{grain_cpu:.2f} s CPU)")
    print(f"tfds as_dataset + rlds.transformations.batch: {tf_rate:12,.0f} steps/s ({tf_steps} steps, {tf_s:.2f} s)")
    print(f"ratio grain/tf.data: {grain_rate / tf_rate:.2f}")


if __name__ == "__main__":
    main()
