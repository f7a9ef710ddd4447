"""Validation loss against model size (`rillet reproduce pac-scaling`): the same data, batches and
updates for each Perceiver size, and the PAC loss on held-out episodes at the end. Results:
docs/RESULTS.md, "Offline PAC" (validation loss against model size).
"""

from __future__ import annotations

import os

from rillet.errors import ConfigError
from rillet.pipelines.offline_config import OfflineConfig
from rillet.reproductions.common import loss_against_size, train_offline_run, write_json
from rillet.reproductions.pac_offline import PAC_ALPHA, PAC_POLYAK_TAU, PAC_V_MAX, PAC_V_MIN


def pac_scaling(data: tuple[str, ...], out: str = "runs/pac-scaling",
                sizes: tuple[str, ...] = ("test", "cpu-d32", "cpu-d64", "cpu-d128"), num_steps: int = 2_000,
                batch_size: int = 64, validation_fraction: float = 0.1, seed: int = 0, alpha: float = PAC_ALPHA,
                learning_rate: float = 3e-4, n_step: int = 5, target_polyak_tau: float = PAC_POLYAK_TAU,
                kl_epsilon: float = OfflineConfig.kl_epsilon) -> dict:
    """The final validation loss (PAC loss terms at `alpha` on held-out episodes, no update) per model
    size, same data and updates: table, pac_scaling.json, pac_scaling.png (loss against parameters).
    No environment evaluation. Runs: <out>/<size>. The options not listed below are `rillet
    train-offline`'s, the same for every size.

    Args:
        data: the RLDS datasets, one task each.
        out: the folder of the runs, pac_scaling.json and pac_scaling.png.
        sizes: model sizes of `rillet train-offline --size`.
        validation_fraction: episodes held out when a dataset has no 'validation' split (must give some).
        alpha: the weight of behaviour cloning in the loss (1: behaviour cloning only).
    """
    rows = {}
    for size in sizes:
        r = train_offline_run(data, os.path.join(out, size), size=size, num_steps=num_steps, batch_size=batch_size,
                              alpha=alpha, learning_rate=learning_rate, v_min=PAC_V_MIN, v_max=PAC_V_MAX,
                              n_step=n_step, target_polyak_tau=target_polyak_tau, kl_epsilon=kl_epsilon,
                              eval_episodes=0, eval_every_steps=max(1, num_steps // 5),
                              checkpoint_every_steps=num_steps, validation_fraction=validation_fraction, seed=seed)
        if r["final_validation"] is None:
            raise ConfigError("pac_scaling needs validation data: datasets with a 'validation' split or "
                              "validation_fraction > 0.")
        rows[size] = {"params": r["params"], **r["final_validation"], "wall_s": r["wall_s"]}
    write_json(os.path.join(out, "pac_scaling.json"), rows)
    png = loss_against_size(rows, os.path.join(out, "pac_scaling.png"),
                            f"PAC validation loss vs size (alpha {alpha:g}, {num_steps} updates)")
    print(f"{'size':>10} {'params':>10} {'val loss':>10} {'bc':>10} {'critic':>10} {'wall s':>8}")
    for s, r in rows.items():
        print(f"{s:>10} {r['params']:>10} {r['loss']:>10.4f} {r['bc_loss']:>10.4f} {r['critic_loss']:>10.4f} "
              f"{r['wall_s']:>8}")
    print(f"figure: {png}")
    return rows

