"""Paper reproductions: a tuned config, a comparison, a figure, one small module each, composed only
from rillet's public stages (`train_online`, `train_offline`, the evaluation and plotting stages).

`rillet reproduce NAME [options]` runs REPRODUCTIONS[NAME]; its keyword arguments are the options
(`rillet reproduce NAME --help`). Results and the commands behind them: docs/RESULTS.md.
"""

from __future__ import annotations

from typing import Callable

from rillet.reproductions.agent57_atari_smoke import agent57_atari_smoke
from rillet.reproductions.agent57_minigrid import agent57_minigrid
from rillet.reproductions.common import plot_runs
from rillet.reproductions.deep_sea import deep_sea
from rillet.reproductions.deep_sea_demos import deep_sea_demos
from rillet.reproductions.himo_hindsight import himo_hindsight
from rillet.reproductions.meme_minigrid import meme_minigrid
from rillet.reproductions.ngu_minigrid import ngu_atari_smoke, ngu_minigrid
from rillet.reproductions.offline_r2d2 import offline_r2d2
from rillet.reproductions.pac_offline import pac_data, pac_seeds, pac_vs_bc
from rillet.reproductions.pac_scaling import pac_scaling
from rillet.reproductions.r2d2_cartpole import po_cartpole
from rillet.reproductions.r2d2_estimators import estimators
from rillet.reproductions.r2d2_pong_smoke import pong_smoke
from rillet.reproductions.recode_density import recode_density
from rillet.reproductions.td3_estimators import td3_estimators
from rillet.reproductions.transfer_minigrid import transfer_minigrid
from rillet.reproductions.recode_minigrid import recode_minigrid

REPRODUCTIONS: dict[str, Callable] = {
    "po-cartpole": po_cartpole,
    "estimators": estimators,
    "pong-smoke": pong_smoke,
    "pac-data": pac_data,
    "pac-vs-bc": pac_vs_bc,
    "pac-scaling": pac_scaling,
    "pac-seeds": pac_seeds,
    "ngu-minigrid": ngu_minigrid,
    "ngu-atari-smoke": ngu_atari_smoke,
    "agent57-minigrid": agent57_minigrid,
    "agent57-atari-smoke": agent57_atari_smoke,
    "meme-minigrid": meme_minigrid,
    "recode-density": recode_density,
    "recode-minigrid": recode_minigrid,
    "deep-sea": deep_sea,
    "deep-sea-demos": deep_sea_demos,
    "himo-hindsight": himo_hindsight,
    "offline-r2d2": offline_r2d2,
    "td3-estimators": td3_estimators,
    "transfer-minigrid": transfer_minigrid,
    "plot-runs": plot_runs,
}
