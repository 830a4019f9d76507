"""GOLS-I, ALI-G, SGD-HD and COCOB train the digits MLP within its default budget (600 steps).

Hyperparameters are points of the thesis grids (Appendix A.2.3 and C.4.1).
"""

import pytest

from lsbench.train import TrainConfig, train

THESIS_GRID_POINTS = {
    "gols_i": {"initial_step_size": 0.01, "momentum": 0.4, "step_size_scaling": 2.0, "wolfe_c2": 0.9},
    "alig": {"max_lr": 0.1, "momentum": 0.9},
    "sgd_hd": {"lr": 0.1, "hypergradient_lr": 0.001},
    "cocob": {"alpha": 100.0},
}


@pytest.mark.parametrize("name", sorted(THESIS_GRID_POINTS))
def test_trains_digits_to_85_percent(name):
    result = train(TrainConfig.create("digits_mlp", name, THESIS_GRID_POINTS[name], seed=1))
    assert result.status == "completed" and result.steps_done == 600
    assert result.final["test_acc"] >= 0.85, result.final
