"""One training run: budget, evaluation schedule, metrics, determinism, divergence and output files."""

import json
import math
from pathlib import Path

import pytest
import torch

from lsbench.train import FINAL_MODEL_FILE, METRICS_FILE, RESULT_FILE, TrainConfig, TrainResult, train

PAL = {"measuring_step_size": 0.1, "update_step_adaptation": 1.0}


def test_sgd_learns_digits_and_reports_every_evaluation_point(tmp_path: Path) -> None:
    points = []
    config = TrainConfig.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1, steps=300, eval_every=100)
    result = train(config, tmp_path, on_eval=points.append)

    assert result.status == "completed"
    assert result.steps_done == result.total_steps == 300
    assert result.diverged_at_step is None
    assert [p["step"] for p in result.history] == [100, 200, 300]
    assert points == result.history
    for point in result.history:
        assert all(math.isfinite(value) for value in point.values()), point
        assert point["updates"] == 100
        assert point["mean_effective_lr"] == pytest.approx(0.1)
    assert [p["forward_passes"] for p in result.history] == [100, 200, 300]
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    assert result.final["test_acc"] >= 0.9
    assert result.summary()["test_acc"] == result.final["test_acc"]
    assert result.mean_effective_lr == pytest.approx(0.1)

    stored = json.loads((tmp_path / RESULT_FILE).read_text())
    assert stored["status"] == "completed"
    assert stored["config"]["hparams"] == {"lr": 0.1, "momentum": 0.0, "nesterov": False, "lr_schedule": "constant"}
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.history
    assert set(torch.load(tmp_path / FINAL_MODEL_FILE)) == {"net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"}


def test_budget_not_a_multiple_of_the_interval_still_ends_with_an_evaluation() -> None:
    result = train(TrainConfig.create("synthetic_mlp", "sgd", seed=2, steps=50, eval_every=20))
    assert [p["step"] for p in result.history] == [20, 40, 50]
    assert result.history[-1]["updates"] == 10
    assert result.history[-1]["forward_passes"] == 50


def test_problem_defaults_fill_unset_settings() -> None:
    config = TrainConfig.create("synthetic_mlp", "adam").resolved()
    assert (config.run.steps, config.run.eval_every, config.run.batch_size, config.run.weight_decay) == (
        500,
        100,
        64,
        0.0,
    )
    assert config.run.hparams["lr"] == 1e-3
    assert config.device == "cpu"


def test_same_config_gives_bitwise_identical_runs(tmp_path: Path, assert_same_run) -> None:
    config = TrainConfig.create("digits_mlp", "pal", PAL, seed=3, steps=120, eval_every=40, weight_decay=1e-4)
    first = train(config, tmp_path / "a")
    second = train(config, tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b", first.to_dict(), second.to_dict())


def test_other_seed_gives_another_run() -> None:
    runs = [train(TrainConfig.create("synthetic_mlp", "sgd", seed=seed, steps=20, eval_every=20)) for seed in (1, 2)]
    assert runs[0].final["train_loss"] != runs[1].final["train_loss"]


def test_absurd_learning_rate_diverges_cleanly_and_stops_early(tmp_path: Path) -> None:
    config = TrainConfig.create("digits_mlp", "sgd", {"lr": 1e6}, seed=1, steps=300, eval_every=50)
    result = train(config, tmp_path)

    assert result.status == "diverged"
    assert result.steps_done == 50 < result.total_steps
    assert result.diverged_at_step is not None and 1 <= result.diverged_at_step <= 50
    assert [p["step"] for p in result.history] == [50]
    # The JSON files carry null for the non-finite metrics and stay strict JSON.
    stored = json.loads((tmp_path / RESULT_FILE).read_text(), parse_constant=pytest.fail)
    assert stored["status"] == "diverged"
    assert stored["diverged_at_step"] == result.diverged_at_step


def test_the_first_bad_step_is_exact() -> None:
    """Training one step less than the reported first bad step stays finite; training up to it does not."""

    def run(steps: int) -> TrainResult:
        return train(TrainConfig.create("digits_mlp", "sgd", {"lr": 1e6}, seed=1, steps=steps, eval_every=100))

    bad = run(100).diverged_at_step
    assert bad is not None and bad > 1
    assert run(bad - 1).status == "completed"
    assert run(bad).diverged_at_step == bad


def test_weight_decay_shrinks_the_parameters(tmp_path: Path) -> None:
    def final_norm(weight_decay: float) -> float:
        out = tmp_path / str(weight_decay)
        train(
            TrainConfig.create("synthetic_mlp", "sgd", seed=1, steps=100, eval_every=100, weight_decay=weight_decay),
            out,
        )
        params = torch.load(out / FINAL_MODEL_FILE)
        return torch.stack([p.norm() for p in params.values()]).norm().item()

    assert final_norm(0.1) < 0.9 * final_norm(0.0)


def test_labpal_noise_factor_rescales_the_budget() -> None:
    hparams = {"noise_factor": 0.5, "sgd_steps": 5, "approximation_batch_size": 128, "untrustworthy_updates": 2}
    result = train(TrainConfig.create("synthetic_mlp", "labpal_sgd", hparams, seed=1, steps=80, eval_every=20))
    assert result.status == "completed"
    assert result.steps_done == result.total_steps == 40
    assert [p["step"] for p in result.history] == [20, 40]
    # Measurement steps move nothing, so LABPAL updates on fewer steps than it samples.
    assert sum(p["updates"] for p in result.history) < 40
    assert result.history[-1]["backward_passes"] < result.history[-1]["forward_passes"]


@pytest.mark.parametrize("optimizer", ["sgd", "pal"])
def test_steps_do_not_read_values_from_the_device(monkeypatch: pytest.MonkeyPatch, optimizer: str) -> None:
    """Between evaluation points nothing is read back to the host: the number of reads does not grow with
    the number of steps (on a GPU every read would stall the device)."""
    reads = 0

    def counting(method):
        def wrapper(self, *args, **kwargs):
            nonlocal reads
            reads += 1
            return method(self, *args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))

    def reads_for(steps: int) -> int:
        nonlocal reads
        config = TrainConfig.create(
            "synthetic_mlp", optimizer, PAL if optimizer == "pal" else {}, steps=steps, eval_every=steps
        )
        reads = 0
        train(config)
        return reads

    few, many = reads_for(10), reads_for(40)
    assert 0 < few == many  # > 0: the evaluation's reads are seen, so the counting works


def test_config_round_trips_through_json() -> None:
    config = TrainConfig.create(
        "digits_cnn", "labpal_nsgd", {"batch_size_schedule": [[0.0, 1], [0.5, 2]]}, seed=3, steps=10, device="auto"
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "nope"}, "unknown optimizer"),
        ({"problem": "nope"}, "unknown problem"),
        ({"hparams": {"learning_rate": 0.1}}, "unknown hyperparameter"),
        ({"hparams": {"lr": -1.0}}, "below the minimum"),
        ({"steps": 0}, "steps"),
        ({"eval_every": 2.5}, "eval_every"),
        ({"checkpoint_every": True}, "checkpoint_every"),
        ({"weight_decay": math.inf}, "weight_decay"),
        ({"seed": -1}, "seed"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_invalid_configs_fail_before_any_data_is_loaded(changes: dict, message: str) -> None:
    fields = {"problem": "digits_mlp", "optimizer": "sgd", **changes}
    with pytest.raises(ValueError, match=message):
        TrainConfig.create(**fields)


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match="unknown run fields: learning_rate"):
        TrainConfig.from_dict({"problem": "digits_mlp", "optimizer": "sgd", "learning_rate": 0.1})
    with pytest.raises(ValueError, match="missing run fields: optimizer"):
        TrainConfig.from_dict({"problem": "digits_mlp"})


def test_result_to_dict_is_strict_json() -> None:
    result = TrainResult(
        config={},
        status="diverged",
        steps_done=1,
        total_steps=2,
        diverged_at_step=1,
        history=[{"step": 1, "train_loss": math.nan, "val_loss": math.inf}],
        elapsed=0.5,
        mean_effective_lr=math.nan,
    )
    record = result.to_dict()
    assert record["final"] == {"step": 1, "train_loss": None, "val_loss": None}
    assert record["summary"]["mean_effective_lr"] is None
    json.dumps(record, allow_nan=False)
