"""Human-normalised Atari scores: the random score maps to 0 and the human score to 1 for every game;
mean, median and the cap; unknown games are a clear error."""

import pytest

from rillet.errors import ConfigError
from rillet.evals.atari_scores import HUMAN_SCORES, RANDOM_SCORES, human_normalised, normalised_scores


def test_random_is_zero_and_human_is_one_for_every_game():
    assert len(RANDOM_SCORES) == len(HUMAN_SCORES) == 57
    for game in RANDOM_SCORES:
        assert human_normalised(f"{game}-v5", RANDOM_SCORES[game]) == pytest.approx(0.0, abs=1e-12)
        assert human_normalised(f"{game}-v5", HUMAN_SCORES[game]) == pytest.approx(1.0)


def test_mean_median_and_cap():
    scores = normalised_scores({"Pong-v5": 14.6, "Breakout-v5": 1.7 + 2 * (30.5 - 1.7), "Boxing-v5": 0.1})
    assert scores["per_game"] == pytest.approx({"Pong-v5": 1.0, "Breakout-v5": 2.0, "Boxing-v5": 0.0})
    assert scores["mean"] == pytest.approx(1.0) and scores["median"] == pytest.approx(1.0)
    assert normalised_scores({"Breakout-v5": 59.3}, cap=1.0)["per_game"]["Breakout-v5"] == 1.0


def test_unknown_game_is_a_clear_error():
    with pytest.raises(ConfigError, match="Atari-57"):
        human_normalised("CartPole-v1", 100.0)
    with pytest.raises(ConfigError, match="at least one"):
        normalised_scores({})
