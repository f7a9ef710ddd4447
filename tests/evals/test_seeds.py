"""compare_seeds / final_return on small hand-checked tables."""

import pytest

from rillet.evals.seeds import SeedResult, compare_seeds, final_return

DATA = {"balance": 500.0, "swingup": 200.0}


def run(setting, seed, balance, swingup):
    return SeedResult(setting, seed, {"balance": balance, "swingup": swingup})


def test_final_return_averages_the_last_evaluations():
    assert final_return([1.0, 2.0, 6.0]) == 6.0
    assert final_return([1.0, 2.0, 6.0], last=2) == 4.0
    assert final_return([3.0], last=5) == 3.0
    with pytest.raises(ValueError, match="no evaluation"):
        final_return([])


def test_a_seed_wins_only_when_it_beats_the_same_seed_baseline_and_the_data_mean_on_every_task():
    results = [
        run("bc", 0, [900.0], [180.0]), run("bc", 1, [400.0], [250.0]),
        run("pac", 0, [950.0], [300.0]),  # beats bc 0 and the data everywhere
        run("pac", 1, [450.0], [300.0]),  # beats bc 1 (400) on balance but not the data mean (500)
    ]
    out = compare_seeds(results, "bc", DATA)
    assert out["pac"]["wins"] == [0]
    assert out["pac"]["seeds"] == [0, 1]
    assert out["pac"]["mean"] == {"balance": 700.0, "swingup": 300.0}
    assert out["pac"]["std"]["balance"] == 250.0
    assert out["pac"]["per_seed"][1] == {"balance": 450.0, "swingup": 300.0}
    assert out["bc"]["wins"] == []  # bc 0 is under the swingup data mean, bc 1 under the balance one


def test_last_k_evaluations_can_change_the_verdict():
    results = [run("bc", 0, [600.0, 600.0], [250.0, 250.0]), run("pac", 0, [300.0, 900.0], [400.0, 400.0])]
    assert compare_seeds(results, "bc", DATA, last=1)["pac"]["wins"] == [0]
    assert compare_seeds(results, "bc", DATA, last=2)["pac"]["wins"] == []  # (300 + 900) / 2 = 600, not > 600


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="baseline 'bc' has only seeds"):
        compare_seeds([run("bc", 0, [1.0], [1.0]), run("pac", 1, [1.0], [1.0])], "bc", DATA)
    with pytest.raises(ValueError, match="no run of the baseline"):
        compare_seeds([run("pac", 0, [1.0], [1.0])], "bc", DATA)
    with pytest.raises(ValueError, match="two runs of 'pac' with seed 0"):
        compare_seeds([run("bc", 0, [1.0], [1.0]), run("pac", 0, [1.0], [1.0]), run("pac", 0, [2.0], [2.0])],
                      "bc", DATA)
    with pytest.raises(ValueError, match="same datasets"):
        compare_seeds([SeedResult("bc", 0, {"balance": [1.0]})], "bc", DATA)
