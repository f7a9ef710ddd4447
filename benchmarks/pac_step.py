"""PAC learner throughput per Perceiver size: update steps/s, samples/s, tokens/s, TFLOP/s and MFU;
with --data, also the offline loader's rows/s and whether it keeps up with the learner.

    .venv/bin/python benchmarks/pac_step.py --sizes xs s --batch 64 --steps 10
    .venv/bin/python benchmarks/pac_step.py --sizes test cpu-d32 cpu-d128 --steps 20
    .venv/bin/python benchmarks/pac_step.py --sizes xs s --data data/pointmass data/pendulum

--sizes takes the Perceiver presets and the CPU ladder of `rillet.pipelines.offline_config.SIZES`.
--data DIR [DIR ...]: RLDS datasets, one task each, as `rillet train-offline --data` takes them. The
offline batch stream (`offline_data.MixedBatches`, batch --batch split equally between the tasks, the
datasets' "train" split) is timed for --loader-seconds after --loader-warmup batches: "loader: X rows/s
(Y batches/s of B)"; the host-to-device copy of a batch is in neither the loader's nor the learner's time.
The learner then uses those tasks' specs and a real batch (instead of the synthetic --obs/--act
tasks), and each size prints loader rows/s / learner samples/s: below 1x the loader starves the
learner. `rillet train-offline` calls next(batches) on the thread that dispatches the updates: loader
time hides behind the learner's only as far as dispatch runs ahead (on CPU they also share the cores),
so near 1x is already a slowdown; its time/loader_wait_fraction metric shows the share lost.

tokens/s counts encoder input tokens of the observation s: batch * (num_obs_tokens + 1 task token)
per step. FLOPs are counted analytically from the update's jaxpr: every dot_general / convolution
of the forward, backward and target passes (2 FLOPs per multiply-add; elementwise ops ignored;
scan bodies times their length). MFU = achieved FLOP/s / the device's dense bf16 peak, for devices
in PEAK_BF16_FLOPS. Sizes whose estimated memory exceeds the device's are skipped.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from bench_common import jaxpr_flops
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import pac
from rillet.learners.networks import perceiver
from rillet.pipelines import offline_config

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, SXM parts


def peak_flops(device) -> float | None:
    if device.platform != "gpu":
        return None
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device.device_kind), None)


def measured_matmul_tflops(device, n: int = 8192, reps: int = 10) -> float | None:
    """TFLOP/s of an n x n x n bf16 matrix product on random data (GPU only): the achievable ceiling."""
    if device.platform != "gpu":
        return None
    a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jax.numpy.bfloat16) for i in (1, 2))
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, b))
    t0 = time.perf_counter()
    for _ in range(reps):
        out = matmul(a, b)
    jax.block_until_ready(out)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def available_bytes(device) -> float:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"])
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) * 0.5


def make_batch(batch: int, obs: int, act: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation": rng.normal(size=(batch, obs)).astype(np.float32),
        "next_observation": rng.normal(size=(batch, obs)).astype(np.float32),
        "task_id": rng.integers(0, 2, batch).astype(np.int32),
        "action": rng.uniform(-1, 1, (batch, act)).astype(np.float32),
        "reward": rng.normal(size=batch).astype(np.float32),
        "discount": np.full(batch, 0.99, np.float32),
    }


def bench_loader(args) -> dict:
    """Rows/s of the offline runner's batch stream over --data (after --loader-warmup batches)."""
    from rillet.pipelines.offline_data import MixedBatches, open_tasks, task_sources

    # validation_fraction 0: each dataset's "train" split as is (the runner may train from a split copy)
    config = offline_config.OfflineConfig(data=tuple(args.data), batch_size=args.batch, n_step=args.n_step,
                                          validation_fraction=0.0).validate()
    tasks = open_tasks(config.data, check_env=False)
    train, _ = task_sources(tasks, config, run_dir="")
    t0 = time.perf_counter()
    batches = MixedBatches(train, tasks, "train", config, config.seed)
    batch = next(batches)
    open_s = time.perf_counter() - t0
    for _ in range(args.loader_warmup):
        next(batches)
    n, t0 = 0, time.perf_counter()
    while n < 10 or time.perf_counter() - t0 < args.loader_seconds:  # sustained: past the prefetch buffers
        next(batches)
        n += 1
    bps = n / (time.perf_counter() - t0)
    print("tasks: " + ", ".join(f"{t.name} (obs {t.obs_size}, act {t.action_size})" for t in tasks) +
          f"; transform {config.transform}, {batches.per_task} rows per task")
    print(f"loader: {bps * args.batch:.0f} rows/s ({bps:.1f} batches/s of {args.batch}; "
          f"{n} timed after {args.loader_warmup} warm-up, first batch {open_s:.2f}s)", flush=True)
    return {"rows_s": bps * args.batch, "batches_s": bps, "specs": [t.spec for t in tasks], "batch": batch}


def bench(size: str, args, loader: dict | None = None) -> dict | None:
    device = jax.devices()[0]
    net = offline_config.network_config(size)
    if loader is None:
        specs = [StepSpec(ArraySpec((args.obs,), "float32"), ArraySpec((args.act,), "float32")),
                 StepSpec(ArraySpec((args.obs // 2,), "float32"), ArraySpec((args.act // 2,), "float32"))]
    else:
        specs = loader["specs"]
    config = pac.PACConfig(network=net, compute_dtype=args.dtype, num_action_samples=args.samples,
                           attention=args.attention)
    abstract = jax.eval_shape(lambda k: pac.init(k, specs, config), jax.random.PRNGKey(0))
    params = perceiver.count_params(abstract.online)
    # fp32 online + target + Adam mu, nu + grads, plus a rough activation allowance.
    act_bytes = 4 * args.batch * 3 * (net.num_latents + net.num_obs_tokens) * net.d_model * net.mlp_ratio * (net.num_layers + 3)
    need = 20 * params + act_bytes
    if need > 0.8 * available_bytes(device):
        print(f"{size:>8}: skipped, needs ~{need / 2**30:.1f} GiB, "
              f"device has {available_bytes(device) / 2**30:.1f} GiB")
        return None
    state = pac.init(jax.random.PRNGKey(0), specs, config)
    batch = jax.device_put(make_batch(args.batch, args.obs, args.act) if loader is None else loader["batch"])
    flops = jaxpr_flops(jax.make_jaxpr(lambda s, b: pac.update(s, b, config))(state, batch).jaxpr)
    t0 = time.perf_counter()
    state, metrics = pac.update(state, batch, config)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        state, metrics = pac.update(state, batch, config)
    jax.block_until_ready(state.steps)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = pac.update(state, batch, config)
    jax.block_until_ready((state.steps, metrics["loss"]))
    sps = args.steps / (time.perf_counter() - t0)
    peak = peak_flops(device)
    row = {
        "size": size, "params_M": params / 1e6, "compile_s": compile_s, "steps_s": sps,
        "samples_s": sps * args.batch, "tokens_s": sps * args.batch * (net.num_obs_tokens + 1),
        "gflop_step": flops / 1e9, "tflops": flops * sps / 1e12,
        "mfu": None if peak is None else flops * sps / peak, "loss": float(metrics["loss"]),
    }
    mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
    print(f"{size:>8}: {row['params_M']:8.1f}M params  {sps:8.2f} steps/s  {row['samples_s']:10.0f} samples/s  "
          f"{row['tokens_s']:10.0f} tokens/s  {row['gflop_step']:9.2f} GFLOP/step  {row['tflops']:7.3f} TFLOP/s  "
          f"MFU {mfu}  (compile {compile_s:.1f}s, loss {row['loss']:.3f})", flush=True)
    if loader is not None:
        row["loader_rows_s"] = loader["rows_s"]
        row["loader_learner"] = ratio = loader["rows_s"] / row["samples_s"]
        print(f"{size:>8}: loader/learner {ratio:.1f}x: the loader "
              f"{'keeps up' if ratio >= 1 else 'starves the learner'}", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["xs", "s", "m", "l"],
                        choices=sorted(perceiver.PRESETS) + sorted(offline_config.SIZES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16, help="num_action_samples M")
    parser.add_argument("--obs", type=int, default=64, help="largest task's observation size")
    parser.add_argument("--act", type=int, default=16, help="largest task's action size")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="compute dtype (default: bfloat16 on GPU, float32 elsewhere)")
    parser.add_argument("--attention", default=None, choices=["cudnn"],
                        help="PACConfig.attention: cuDNN fused self-attention (GPU, bfloat16) instead of XLA's")
    parser.add_argument("--data", nargs="+", metavar="DIR", default=None,
                        help="RLDS datasets (one task each): time the offline loader; the learner uses their specs")
    parser.add_argument("--n-step", type=int, default=1, help="with --data: as `rillet train-offline --n-step`")
    parser.add_argument("--loader-warmup", type=int, default=20, help="with --data: untimed batches first")
    parser.add_argument("--loader-seconds", type=float, default=2.0, help="with --data: time batches this long")
    args = parser.parse_args(argv)
    if args.data and args.batch % len(args.data):
        parser.error(f"--batch {args.batch} must divide by the {len(args.data)} --data tasks (equal rows per task)")
    device = jax.devices()[0]
    args.dtype = args.dtype or ("bfloat16" if device.platform == "gpu" else "float32")
    print(f"device: {device.device_kind} ({device.platform}), batch {args.batch}, M={args.samples}, "
          f"dtype {args.dtype}, attention {args.attention or 'xla'}, jax {jax.__version__}")
    ceiling = measured_matmul_tflops(device)
    if ceiling is not None:
        peak = peak_flops(device)
        share = f" ({100e12 * ceiling / peak:.0f}% of the {peak / 1e12:.0f} TFLOP/s datasheet peak MFU uses)" if peak else ""
        print(f"bf16 8192^3 matmul: {ceiling:.0f} TFLOP/s measured{share}")
    loader = bench_loader(args) if args.data else None
    if loader is None:
        print(f"learner: synthetic tasks obs {args.obs} / act {args.act} and obs {args.obs // 2} / act {args.act // 2}")
    else:
        print("learner: the --data tasks' specs and one real batch (--obs / --act ignored)")
    return [bench(size, args, loader) for size in args.sizes]


if __name__ == "__main__":
    main()
