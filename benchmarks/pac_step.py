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

Baseline: `make_plain_update` below is the same update written as one plain `jax.jit` function with no
rillet import inside (Perceiver encoder and decoders, target-policy samples with the same PRNG key,
the categorical TD target, policy and critic losses, the MPO temperature dual, clipping, Adam, the
Polyak target, the non-finite skip and every metric), started from rillet's initial state converted
to plain arrays. Per size it prints both FLOP counts, the largest differences after one update from
the same state, both rates (--steps updates per side in --rounds alternating rounds) and, last, the
ratio rillet / baseline per size (process CPU time on a CPU, wall clock on an accelerator; target
>= 0.95). --no-baseline times rillet alone, as before. Image observations: rillet alone.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench_common import interleaved_rates, jaxpr_flops, max_abs_diff, median_ratio, step_flops
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


# --------------------------------------------------------------------------- the plain-JAX baseline


def _plain_block(b) -> dict:
    """An AttentionBlock's arrays as a dict of (scale, bias) / (w [in, out], b) pairs (stacked blocks keep
    their leading [num_layers] axis)."""
    names = ("ln_q", "ln_kv", "q", "kv", "out", "ln_mlp", "mlp_in", "mlp_out")
    pairs = {n: getattr(b, n) for n in names}
    return {n: (m.scale, m.bias) if n.startswith("ln") else (m.weight, m.bias) for n, m in pairs.items()}


def plain_params(model) -> dict:
    """A rillet PerceiverActorCritic's arrays as a plain dict (no image encoder)."""
    dense = lambda m: (m.weight, m.bias)  # noqa: E731
    return {"obs_mlp": [dense(m) for m in model.obs_mlp], "obs_pos": model.obs_pos, "task_embed": model.task_embed,
            "latents": model.latents, "encoder": _plain_block(model.encoder),
            "layers": None if model.layers is None else _plain_block(model.layers),
            "ln_latents": (model.ln_latents.scale, model.ln_latents.bias), "policy_queries": model.policy_queries,
            "policy_decoder": _plain_block(model.policy_decoder), "policy_head": dense(model.policy_head),
            "action_mlp": [dense(m) for m in model.action_mlp], "critic_query": model.critic_query,
            "critic_decoder": _plain_block(model.critic_decoder), "critic_head": dense(model.critic_head)}


def _ln(p, x):
    """LayerNorm over the last axis with float32 statistics; returns x's dtype."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(jnp.square(x32 - mean).mean(-1, keepdims=True) + 1e-6)
    return (y * p[0].astype(jnp.float32) + p[1].astype(jnp.float32)).astype(x.dtype)


def _block(p, x, ctx, heads):
    """Pre-LN attention block: x [B, Nq, d], ctx [B, Nk, d] or None (self-attention) -> [B, Nq, d]."""
    lin = lambda name, v: v @ p[name][0] + p[name][1]  # noqa: E731
    xq = _ln(p["ln_q"], x)
    c = xq if ctx is None else _ln(p["ln_kv"], ctx)
    B, nq, d = x.shape
    k, v = jnp.split(lin("kv", c), 2, axis=-1)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d // heads)  # noqa: E731
    att = jax.nn.dot_product_attention(split(lin("q", xq)), split(k), split(v)).reshape(B, nq, d)
    x = x + lin("out", att)
    return x + lin("mlp_out", jax.nn.gelu(lin("mlp_in", _ln(p["ln_mlp"], x))))


def _encode(p, obs, obs_mask, task, n_tokens, heads):
    """obs [B, obs_max] f32, obs_mask [B, obs_max], task [B] -> latents [B, N, d] in the params' dtype."""
    dt = p["latents"].dtype
    x = jnp.concatenate([jnp.where(obs_mask, obs, 0).astype(dt), obs_mask.astype(dt)], axis=-1)
    (w0, b0), (w1, b1) = p["obs_mlp"]
    x = jax.nn.gelu(x @ w0 + b0) @ w1 + b1
    tokens = jnp.concatenate([x.reshape(x.shape[0], n_tokens, -1) + p["obs_pos"], p["task_embed"][task][:, None]], 1)
    lat = _block(p["encoder"], jnp.broadcast_to(p["latents"], (obs.shape[0],) + p["latents"].shape), tokens, heads)
    if p["layers"] is not None:
        lat, _ = jax.lax.scan(lambda h, lp: (_block(lp, h, None, heads), None), lat, p["layers"])
    return _ln(p["ln_latents"], lat)


def _policy_logits(p, lat, heads):
    """latents [B, N, d] -> [B, D, K] f32."""
    q = jnp.broadcast_to(p["policy_queries"], (lat.shape[0],) + p["policy_queries"].shape)
    w, b = p["policy_head"]
    return (_block(p["policy_decoder"], q, lat, heads) @ w + b).astype(jnp.float32)


def _critic_logits(p, lat, actions, act_mask, heads):
    """latents [B, N, d], actions [B, M, D], act_mask [B, D] -> [B, M, C] f32."""
    dt = p["latents"].dtype
    m = jnp.broadcast_to(act_mask[:, None], actions.shape)
    a = jnp.concatenate([jnp.where(m, actions, 0).astype(dt), m.astype(dt)], axis=-1)
    (w0, b0), (w1, b1) = p["action_mlp"]
    q = p["critic_query"] + jax.nn.gelu(a @ w0 + b0) @ w1 + b1
    w, b = p["critic_head"]
    return (_block(p["critic_decoder"], q, lat, heads) @ w + b).astype(jnp.float32)


def _log_prob(logp, bins, act_mask):
    """log-probs [B, D, K], bins [B, M, D], act_mask [B, D] -> [B, M], summed over the real dims."""
    per_dim = jnp.take_along_axis(jnp.broadcast_to(logp[:, None], bins.shape + logp.shape[-1:]), bins[..., None], -1)
    return jnp.sum(jnp.where(act_mask[:, None], per_dim[..., 0], 0.0), -1)


def _pac_targets(tp, obs, next_obs, task, obs_mask, act_mask, reward, discount, eta, key, hp):
    """From the target network: (sampled bins [B, M, D], their expected Q [B, M], improvement weights
    [B, M], projected TD target distribution [B, C])."""
    B, K, M, support = obs.shape[0], hp["bins"], hp["samples"], hp["support"]
    lat = _encode(tp, jnp.concatenate([obs, next_obs]), jnp.concatenate([obs_mask, obs_mask]),
                  jnp.concatenate([task, task]), hp["tokens"], hp["heads"])
    mask2 = jnp.concatenate([act_mask, act_mask])
    logits = _policy_logits(tp, lat, hp["heads"])
    bins = jax.random.categorical(key, logits[:, None], axis=-1, shape=(2 * B, M, logits.shape[1]))
    actions = jnp.where(mask2[:, None], bins.astype(jnp.float32) * (2.0 / (K - 1)) - 1.0, 0.0)
    probs = jax.nn.softmax(_critic_logits(tp, lat, actions, mask2, hp["heads"]), -1)  # [2B, M, C]
    q = probs[:B] @ support
    weights = jax.nn.softmax(q / eta[task][:, None], -1)
    atoms = jnp.clip(reward[:, None] + discount[:, None] * support, support[0], support[-1])  # [B, C]
    spread = jnp.clip(1.0 - jnp.abs(atoms[:, :, None] - support) / (support[1] - support[0]), 0.0, 1.0)
    target = jnp.einsum("bi,bij->bj", probs[B:].mean(1), spread)
    return jax.lax.stop_gradient((bins[:B], q, weights, target))


def _pac_loss(params, tp, eta, batch, key, hp):
    """(loss [], (q_samples [B, M], batch_finite [], metrics)) of PAC, params and tp in the compute dtype."""
    task = batch["task_id"]
    obs_mask = jnp.arange(batch["observation"].shape[1]) < jnp.asarray(hp["obs_sizes"])[task][:, None]
    act_mask = jnp.arange(batch["action"].shape[1]) < jnp.asarray(hp["act_sizes"])[task][:, None]
    obs, next_obs = (jnp.where(obs_mask, batch[k], 0.0) for k in ("observation", "next_observation"))
    action = jnp.where(act_mask, jnp.clip(batch["action"], -1.0, 1.0), 0.0)
    sample_bins, q, weights, target = _pac_targets(tp, obs, next_obs, task, obs_mask, act_mask, batch["reward"],
                                                   batch["discount"], eta, key, hp)
    lat = _encode(params, obs, obs_mask, task, hp["tokens"], hp["heads"])
    logits = _policy_logits(params, lat, hp["heads"])
    logp = jax.nn.log_softmax(logits, -1)
    data_bins = jnp.round((action + 1.0) * 0.5 * (hp["bins"] - 1)).astype(jnp.int32)
    bc = -jnp.mean(_log_prob(logp, data_bins[:, None], act_mask))
    imp = -jnp.mean(jnp.sum(weights * _log_prob(logp, sample_bins, act_mask), -1))
    q_logits = _critic_logits(params, lat, action[:, None], act_mask, hp["heads"])[:, 0]
    log_t = jnp.where(target > 0, jnp.log(jnp.where(target > 0, target, 1.0)), 0.0)
    crit = jnp.mean(jnp.sum(target * (log_t - jax.nn.log_softmax(q_logits, -1)), -1))
    checked = (obs, next_obs, jnp.where(act_mask, batch["action"], 0.0), batch["reward"], batch["discount"])
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in checked]))
    pol = (1 - hp["alpha"]) * imp + hp["alpha"] * bc
    entropy = -jnp.sum(jax.nn.softmax(logits) * logp, -1)  # [B, D]
    metrics = {"bc_loss": bc, "improvement_loss": imp, "policy_loss": pol, "critic_loss": crit,
               "q_data": jnp.mean(jax.nn.softmax(q_logits) @ hp["support"]), "q_samples": jnp.mean(q),
               "weights_max": jnp.mean(jnp.max(weights, -1)),
               "policy_entropy": jnp.sum(jnp.where(act_mask, entropy, 0.0)) / jnp.maximum(jnp.sum(act_mask), 1)}
    return pol + hp["beta"] * crit, (q, finite, metrics)


def _adam(grads, mu, nu, count, lr, eps, b1=0.9, b2=0.999):
    """One Adam step -> (updates to add, mu, nu, count)."""
    count = count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    c1, c2 = 1 - b1 ** count.astype(jnp.float32), 1 - b2 ** count.astype(jnp.float32)
    return jax.tree.map(lambda m, v: -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu), mu, nu, count


def _dual(log_eta, q, task, epsilon):
    """MPO's temperature dual summed over tasks: log_eta [T], q [B, M], task [B] -> []."""
    eta = jnp.exp(log_eta)[task]
    per_row = eta * (epsilon + jax.nn.logsumexp(q / eta[:, None], -1) - math.log(q.shape[-1]))
    rows = jnp.zeros_like(log_eta).at[task].add(1.0)
    return jnp.sum(per_row / rows[task])


def make_plain_update(config: pac.PACConfig, obs_sizes, act_sizes):
    """The baseline: one jitted function (state dict, batch) -> (state dict, metrics): the metrics of
    `pac.update`. The state: params, target (float32), opt (mu, nu, count), log_eta [T], dual (mu, nu, count), steps,
    skipped, key; constant learning rate, Polyak or periodic hard target updates as the config says."""
    net = perceiver.get_config(config.network)
    hp = {"heads": net.num_heads, "tokens": net.num_obs_tokens, "bins": config.num_bins,
          "samples": config.num_action_samples, "alpha": config.alpha, "beta": config.beta,
          "obs_sizes": tuple(obs_sizes), "act_sizes": tuple(act_sizes)}
    dt, tau = jnp.dtype(config.compute_dtype), config.target_polyak_tau

    @jax.jit
    def plain_update(s, batch):
        hp_s = {**hp, "support": jnp.linspace(config.v_min, config.v_max, config.num_atoms, dtype=jnp.float32)}
        key, loss_key = jax.random.split(s["key"])
        eta = jnp.exp(s["log_eta"]) if config.learn_temperature else jnp.full_like(s["log_eta"], config.eta)
        cast = lambda t: jax.tree.map(lambda x: x.astype(dt), t)  # noqa: E731
        loss_of = lambda p: _pac_loss(cast(p), cast(s["target"]), eta, batch, loss_key, hp_s)  # noqa: E731
        (loss, (q, finite, metrics)), grads = jax.value_and_grad(loss_of, has_aux=True)(s["params"])
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        ok = finite & jnp.isfinite(loss) & jnp.isfinite(norm)
        grads = jax.tree.map(lambda g: jnp.where(ok, g, 0.0), grads)
        clip = config.max_grad_norm  # clipping sees the zeroed gradients when not ok: the step is dropped then
        grads = jax.tree.map(lambda g: jnp.where(norm < clip, g, g / norm * clip), grads)
        updates, mu, nu, count = _adam(grads, *s["opt"], config.learning_rate, config.adam_eps)
        params = jax.tree.map(jnp.add, s["params"], updates)
        steps = s["steps"] + 1
        if tau is None:
            target = jax.tree.map(lambda o, t: jnp.where(steps % config.target_update_period == 0, o, t),
                                  params, s["target"])
        else:
            target = jax.tree.map(lambda o, t: (1 - tau) * t + tau * o, params, s["target"])
        log_eta, dual = s["log_eta"], s["dual"]
        if config.learn_temperature:
            g_eta = jax.grad(_dual)(log_eta, jax.lax.stop_gradient(q), batch["task_id"], config.kl_epsilon)
            step, *dual = _adam(g_eta, *dual, config.dual_learning_rate, 1e-8)
            log_eta = jnp.clip(log_eta + step, -12.0, 12.0)
        new = {"params": params, "target": target, "opt": (mu, nu, count), "log_eta": log_eta,
               "dual": tuple(dual), "steps": steps, "key": key}
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, {k: s[k] for k in new})  # non-finite: skip
        skip = (~ok).astype(jnp.int32)
        new["skipped"] = s["skipped"] + skip
        return new, {**metrics, "loss": loss, "grad_norm": norm, "temperature": jnp.mean(eta),
                     "skipped_nonfinite": skip, "skipped_total": new["skipped"]}

    return plain_update


def _adam_state(opt_state) -> tuple:
    """(mu, nu, count) of the Adam transformation inside an optax state."""
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)  # noqa: E731
    adam = next(x for x in jax.tree.leaves(opt_state, is_leaf=is_adam) if is_adam(x))
    return adam.mu, adam.nu, adam.count


def plain_state(state) -> dict:
    """The baseline's state from a rillet PACState (constant learning rate)."""
    mu, nu, count = _adam_state(state.opt_state)
    return {"params": plain_params(state.online), "target": plain_params(state.target),
            "opt": (plain_params(mu), plain_params(nu), count), "log_eta": state.log_temperature,
            "dual": _adam_state(state.dual_opt_state), "steps": state.steps, "skipped": state.skipped,
            "key": state.key}


# --------------------------------------------------------------------------- benchmark


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


def check_outputs(state, batch, config: pac.PACConfig, plain_update) -> str:
    """One update of each from the same state and batch (and PRNG key): the largest differences."""
    new, m = pac.update(state, batch, config)
    plain, pm = plain_update(plain_state(state), batch)
    rel = lambda a, b: abs(float(a) / float(b) - 1)  # noqa: E731
    mu = plain_params(_adam_state(new.opt_state)[0])
    mu_max = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(mu))
    worst = max(pm, key=lambda k: abs(float(m[k]) - float(pm[k])) / max(abs(float(pm[k])), 1e-6))
    metric = f"metrics ({len(pm)}) largest rel diff {worst} {float(m[worst]):.6g} vs {float(pm[worst]):.6g}; "
    return (f"loss {float(m['loss']):.6f} vs {float(pm['loss']):.6f} (rel diff {rel(m['loss'], pm['loss']):.1e}); "
            f"grad_norm rel diff {rel(m['grad_norm'], pm['grad_norm']):.1e}; Adam first moments max abs diff "
            f"{max_abs_diff(mu, plain['opt'][0]):.1e} (largest {mu_max:.1e}); {metric}updated params max abs diff "
            f"{max_abs_diff(plain_params(new.online), plain['params']):.1e}, target "
            f"{max_abs_diff(plain_params(new.target), plain['target']):.1e}, log temperature "
            f"{max_abs_diff(new.log_temperature, plain['log_eta']):.1e} (one Adam step moves each by ~"
            f"{config.learning_rate:g})")


def compare_baseline(state, batch, specs, config: pac.PACConfig, args, flops: float) -> tuple[float, float]:
    """Prints the baseline's FLOPs, the output check and both rates (--steps updates per side in
    --rounds alternating rounds); returns (rillet updates/s by wall clock, ratio rillet / baseline by
    process CPU time on a CPU, by wall clock on an accelerator)."""
    plain_update = make_plain_update(config, *pac.task_sizes(specs))
    pstate = plain_state(state)
    f_plain = step_flops(plain_update, pstate, batch)
    print(f"{'':>8}  FLOPs/update: rillet {flops / 1e9:.3f} G, baseline {f_plain / 1e9:.3f} G "
          f"(ratio {flops / f_plain:.4f})")
    print(f"{'':>8}  same outputs, one update: {check_outputs(state, batch, config, plain_update)}", flush=True)
    steps = {"rillet": lambda s: pac.update(s, batch, config)[0], "baseline": lambda s: plain_update(s, batch)[0]}
    states = {"rillet": state, "baseline": pstate}
    for name, fn in steps.items():
        for _ in range(args.warmup + 1):
            states[name] = fn(states[name])
    rates = interleaved_rates(steps, states, max(1, math.ceil(args.steps / args.rounds)), args.rounds)
    clock = "cpu" if jax.devices()[0].platform == "cpu" else "wall"
    for name in steps:
        print(f"{'':>8}  {name:>8}: {statistics.median(rates['wall'][name]):8.2f} updates/s wall, "
              f"{statistics.median(rates['cpu'][name]):8.2f} per process CPU second")
    return statistics.median(rates["wall"]["rillet"]), median_ratio(rates[clock], "rillet", "baseline")


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
    tokens = net.num_latents + net.num_obs_tokens
    act_bytes = 4 * args.batch * 3 * tokens * net.d_model * net.mlp_ratio * (net.num_layers + 3)
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
    ratio = None
    if args.baseline and net.image_shape is None:
        sps, ratio = compare_baseline(state, batch, specs, config, args, flops)
    else:
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
        "mfu": None if peak is None else flops * sps / peak, "loss": float(metrics["loss"]), "ratio": ratio,
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
    parser.add_argument("--rounds", type=int, default=5,
                        help="with the baseline: --steps updates per side in this many alternating rounds")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="time rillet alone (no plain-JAX baseline, FLOP comparison or output check)")
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
        share = (f" ({100e12 * ceiling / peak:.0f}% of the {peak / 1e12:.0f} TFLOP/s datasheet peak MFU uses)"
                 if peak else "")
        print(f"bf16 8192^3 matmul: {ceiling:.0f} TFLOP/s measured{share}")
    loader = bench_loader(args) if args.data else None
    if loader is None:
        print(f"learner: synthetic tasks obs {args.obs} / act {args.act} and obs {args.obs // 2} / act {args.act // 2}")
    else:
        print("learner: the --data tasks' specs and one real batch (--obs / --act ignored)")
    rows = [bench(size, args, loader) for size in args.sizes]
    clock = "process CPU time" if device.platform == "cpu" else "wall clock"
    for row in rows:
        if row is not None and row["ratio"] is not None:
            print(f"ratio rillet / baseline ({row['size']}, {args.dtype}, {clock}): {row['ratio']:.3f} "
                  "(target >= 0.95)")
    return rows


if __name__ == "__main__":
    main()
