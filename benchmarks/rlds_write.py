"""Writer throughput: rillet's RldsWriter vs tfds SequentialWriter on the same CartPole episodes.

    .venv/bin/python benchmarks/rlds_write.py --steps 200000

Both write ArrayRecord. RldsWriter's time includes splitting batched actor steps into episodes;
SequentialWriter gets the episodes already stacked. Prints the ratio (rillet / tfds) last.
"""

import argparse
import os
import tempfile
import time



def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--num-envs", type=int, default=8)
    args = p.parse_args()
    import tensorflow_datasets as tfds

    from rillet.actors.actor_loop import envpool_actor
    from rillet.actors.envpool_env import BatchedEnv
    from rillet.actors.policies import random_policy
    from rillet.datasets.rlds_writer import RldsWriter, step_features

    env = BatchedEnv("CartPole-v1", args.num_envs, seed=0)
    steps = list(envpool_actor(env, random_policy(2), lambda: None, None, seed=0,
                               max_ticks=args.steps // args.num_envs))
    tmp = tempfile.mkdtemp()
    t0 = time.perf_counter()
    with RldsWriter(os.path.join(tmp, "rillet"), env.spec, env_id="CartPole-v1", policy_name="random", seed=0) as w:
        for s in steps:
            w.write(s)
    rillet_s = time.perf_counter() - t0
    n = w.card["num_steps"]

    episodes = [e["steps"] for e in __import__("rillet.datasets.rlds_reader", fromlist=["x"]).rlds_episodes(
        os.path.join(tmp, "rillet"))]
    os.makedirs(os.path.join(tmp, "tfds"))
    info = tfds.core.DatasetInfo(builder=tfds.core.dataset_info.DatasetIdentity(
        name="bench", version=tfds.core.Version("1.0.0"), data_dir=os.path.join(tmp, "tfds"), module_name=""),
        features=step_features(env.spec))
    t0 = time.perf_counter()
    writer = tfds.core.SequentialWriter(info, max_examples_per_shard=1000, file_format="array_record")
    writer.initialize_splits(["train"])
    for i in range(0, len(episodes), 32):
        writer.add_examples({"train": [{"steps": {k: v for k, v in e.items() if k != "extras"}}
                                       for e in episodes[i:i + 32]]})
    writer.close_all()
    tfds_s = time.perf_counter() - t0
    print(f"episodes {len(episodes)}, steps {n}")
    print(f"rillet RldsWriter:      {n / rillet_s:12,.0f} steps/s ({rillet_s:.2f} s)")
    print(f"tfds SequentialWriter:  {n / tfds_s:12,.0f} steps/s ({tfds_s:.2f} s)")
    print(f"ratio rillet/tfds: {tfds_s / rillet_s:.2f}")


if __name__ == "__main__":
    main()
