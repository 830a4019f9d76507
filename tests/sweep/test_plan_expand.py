"""Expansion: order, stable content-derived run ids, zip axes, RunSpec round trips."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import textwrap

import pytest
from tests import paths

from lsbench.sweep.grid import parse_grid
from lsbench.sweep.plan import RunSpec, canonical_json, expand, run_id_of
from lsbench.train import TrainConfig

GRIDS = paths.GRIDS


def grid_of(text: str):
    return parse_grid(textwrap.dedent(text))


def ids(text: str) -> list[str]:
    return [r.run_id for r in expand(grid_of(text))]


BASE = """\
name: t
problems: [digits_mlp, synthetic_mlp]
seeds: [1, 2]
optimizers:
  sgd:
    grid: {lr: [0.1, 0.01], momentum: [0.0, 0.9]}
  pal: {}
"""


def test_order_problem_optimizer_point_seed() -> None:
    runs = expand(grid_of(BASE))
    assert len(runs) == 2 * (4 + 1) * 2
    keys = [(r.problem, r.optimizer, r.hparams.get("lr"), r.hparams.get("momentum"), r.seed) for r in runs]
    assert keys[:5] == [
        ("digits_mlp", "sgd", 0.1, 0.0, 1),
        ("digits_mlp", "sgd", 0.1, 0.0, 2),
        ("digits_mlp", "sgd", 0.1, 0.9, 1),
        ("digits_mlp", "sgd", 0.1, 0.9, 2),
        ("digits_mlp", "sgd", 0.01, 0.0, 1),
    ]
    assert [r.problem for r in runs] == ["digits_mlp"] * 10 + ["synthetic_mlp"] * 10
    assert [r.optimizer for r in runs[:10]] == ["sgd"] * 8 + ["pal"] * 2
    assert len({r.run_id for r in runs}) == len(runs)


def test_ids_are_sha256_of_canonical_identity() -> None:
    for name in ("pal_cifar10", "labpal_cifar10", "demo_digits"):
        for run in expand(parse_grid((GRIDS / f"{name}.yaml").read_text())):
            text = json.dumps(run.identity(), sort_keys=True, separators=(",", ":"))
            assert run.run_id == hashlib.sha256(text.encode()).hexdigest()[:16]
            assert canonical_json(run.identity()) == text


def test_fast_construction_equals_the_dataclass_constructor() -> None:
    for run in expand(parse_grid((GRIDS / "labpal_cifar10.yaml").read_text()))[::50]:
        rebuilt = RunSpec(**{f.name: getattr(run, f.name) for f in dataclasses.fields(RunSpec)})
        assert rebuilt == run and hash(rebuilt) == hash(run)
        assert RunSpec.from_dict(run.to_dict()) == run


def test_identity_fields_and_pinned_id() -> None:
    spec = RunSpec.from_dict(
        {
            "problem": "digits_mlp",
            "optimizer": "sgd",
            "hparams": {"lr": 0.1},
            "seed": 1,
            "steps": 600,
            "eval_every": 100,
            "batch_size": 32,
            "weight_decay": 0.0,
        }
    )
    assert set(spec.identity()) == {
        "problem", "optimizer", "hparams", "seed", "steps", "eval_every", "batch_size", "weight_decay"
    }  # fmt: skip
    canonical = (
        '{"batch_size":32,"eval_every":100,"hparams":{"lr":0.1},"optimizer":"sgd","problem":"digits_mlp",'
        '"seed":1,"steps":600,"weight_decay":0.0}'
    )
    assert canonical_json(spec.identity()) == canonical
    assert spec.run_id == hashlib.sha256(canonical.encode()).hexdigest()[:16] == "8d6f926df90aeb29"


def test_expanding_twice_gives_the_same_ids() -> None:
    assert ids(BASE) == ids(BASE)
    reordered = BASE.replace("{lr: [0.1, 0.01], momentum: [0.0, 0.9]}", "{momentum: [0.9, 0.0], lr: [0.01, 0.1]}")
    assert sorted(ids(reordered)) == sorted(ids(BASE))


def test_writing_defaults_explicitly_gives_the_same_ids() -> None:
    explicit = BASE.replace("pal: {}", "pal: {fixed: {max_step_size: 3.16, direction_adaptation: 0.4}}")
    explicit = explicit.replace("momentum: [0.0, 0.9]}", "momentum: [0, 0.9], nesterov: false}")
    explicit = explicit.replace(
        "optimizers:", "budget: {steps: {digits_mlp: 600}}\ntraining: {weight_decay: 0}\noptimizers:"
    )
    assert ids(explicit) == ids(BASE)
    # list-valued defaults: ints or floats, written or left out
    labpal = "name: t\nproblems: [digits_mlp]\noptimizers:\n  labpal_sgd:\n"
    a = ids(labpal + "    fixed: {batch_size_schedule: [[0, 1], [0.5, 2], [0.75, 4]], sgd_steps: 1000}\n")
    b = ids(labpal + "    grid: {batch_size_schedule: [[[0.0, 1.0], [0.5, 2.0], [0.75, 4.0]]]}\n")
    c = ids(labpal + "    {}\n")
    assert a == b == c


def test_int_and_float_spellings_are_one_run() -> None:
    assert ids(BASE.replace("[0.1, 0.01]", "[1, 0.01]")) == ids(BASE.replace("[0.1, 0.01]", "[1.0, 0.01]"))


def test_adding_a_value_adds_exactly_the_new_runs() -> None:
    old = set(ids(BASE))
    grown = ids(BASE.replace("[0.1, 0.01]", "[0.1, 0.01, 0.001]"))
    assert old <= set(grown)
    assert len(set(grown) - old) == 2 * 2 * 2  # new lr x 2 momenta x 2 seeds x 2 problems
    more_seeds = ids(BASE.replace("seeds: [1, 2]", "seeds: [1, 2, 3]"))
    assert old <= set(more_seeds) and len(more_seeds) == len(old) * 3 // 2


def test_a_run_shared_by_two_grids_has_one_id() -> None:
    a = {r.run_id for r in expand(grid_of(BASE))}
    b = {r.run_id for r in expand(grid_of(BASE.replace("name: t", "name: other").replace("  pal: {}\n", "")))}
    assert b < a


def test_split_is_part_of_the_identity_only_when_not_default() -> None:
    default = expand(grid_of(BASE))
    labpal = expand(grid_of(BASE.replace("optimizers:", "training: {split: labpal}\noptimizers:")))
    assert "split" not in default[0].identity()
    assert labpal[0].identity()["split"] == "labpal"
    assert not {r.run_id for r in default} & {r.run_id for r in labpal}
    explicit = expand(grid_of(BASE.replace("optimizers:", "training: {split: default}\noptimizers:")))
    assert [r.run_id for r in explicit] == [r.run_id for r in default]


def test_zip_groups_vary_together_and_multiply_the_grid() -> None:
    text = textwrap.dedent(
        """\
        name: t
        problems: [digits_mlp]
        seeds: [1]
        optimizers:
          labpal_sgd:
            grid: {momentum: [0.0, 0.4, 0.9]}
            zip:
              - {approximation_batch_size: [640, 1280], sgd_steps: [1000, 5000]}
        """
    )
    runs = expand(grid_of(text))
    assert len(runs) == 3 * 2
    pairs = {(r.hparams["approximation_batch_size"], r.hparams["sgd_steps"]) for r in runs}
    assert pairs == {(640, 1000), (1280, 5000)}
    two_groups = text + "      - {max_step_size: [1, 2, 3]}\n"
    assert len(expand(grid_of(two_groups))) == 3 * 2 * 3
    single_mapping = text.replace("zip:\n      - {", "zip: {")
    assert single_mapping != text
    assert ids(single_mapping) == [r.run_id for r in runs]


def test_duplicate_points_appear_once() -> None:
    assert len(expand(grid_of(BASE.replace("[0.1, 0.01]", "[0.1, 0.1, 1.0e-1, 0.01]")))) == len(expand(grid_of(BASE)))
    text = """\
    name: t
    problems: [digits_mlp]
    seeds: [1, 2]
    optimizers:
      sgd:
        zip: [{lr: [0.1, 0.1, 0.2], momentum: [0.9, 0.9, 0.9]}]
    """
    runs = expand(grid_of(text))
    assert [(r.hparams["lr"], r.seed) for r in runs] == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2)]


def test_hparams_are_fully_resolved_and_not_shared() -> None:
    runs = expand(grid_of("name: t\nproblems: [digits_mlp]\noptimizers: {labpal_nsgd: {}}\n"))
    assert set(runs[0].hparams) == {
        "update_step_adaptation", "momentum", "sgd_steps", "approximation_batch_size", "batch_size_schedule",
        "max_step_size", "noise_factor", "measuring_step_size", "near_measuring_step_size", "estimator",
        "untrustworthy_updates", "averaging_window", "direction_norm_bounds",
    }  # fmt: skip
    runs[0].hparams["batch_size_schedule"][0][0] = 0.25
    assert runs[1].hparams["batch_size_schedule"][0][0] == 0.0


def test_create_fills_defaults_like_expand() -> None:
    runs = expand(grid_of(BASE))
    spec = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1, "momentum": 0}, seed=1)
    assert spec == runs[0]
    with pytest.raises(ValueError, match="unknown optimizer"):
        RunSpec.create("digits_mlp", "adamw")
    with pytest.raises(ValueError):
        RunSpec.create("nope", "sgd")


def test_train_config() -> None:
    run = expand(grid_of(BASE.replace("optimizers:", "training: {split: labpal}\noptimizers:")))[0]
    config = run.train_config(device="cpu", checkpoint_every=50)
    assert isinstance(config, TrainConfig)
    assert config.run == run  # the trainer trains exactly the planned run
    assert (config.run.steps, config.run.weight_decay, config.run.split) == (600, 0.0, "labpal")
    assert (config.checkpoint_every, config.device) == (50, "cpu")
    assert run.train_config().device == "auto"


def test_to_dict_round_trip_and_checks() -> None:
    run = expand(grid_of(BASE))[3]
    data = run.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert RunSpec.from_dict(data) == run
    assert RunSpec.from_dict({k: v for k, v in data.items() if k not in ("run_id", "split")}) == run
    with pytest.raises(ValueError, match="does not match"):
        RunSpec.from_dict({**data, "run_id": "0" * 16})
    with pytest.raises(ValueError, match="unknown run fields: colour"):
        RunSpec.from_dict({**data, "colour": 1})
    with pytest.raises(ValueError, match="missing run fields: seed"):
        RunSpec.from_dict({k: v for k, v in data.items() if k != "seed"})
    with pytest.raises(ValueError, match="seed"):
        RunSpec.from_dict({**data, "seed": "1"})
    assert run_id_of(run.identity()) == run.run_id


def test_a_training_setting_of_the_run_model_is_a_grid_setting_and_its_default_keeps_the_ids() -> None:
    default = expand(grid_of(BASE))
    explicit = expand(grid_of(BASE.replace("optimizers:", "training: {precision: fp32}\noptimizers:")))
    bf16 = expand(grid_of(BASE.replace("optimizers:", "training: {precision: {digits_mlp: bf16}}\noptimizers:")))
    assert [r.run_id for r in explicit] == [r.run_id for r in default]
    assert {(r.problem, r.precision) for r in bf16} == {("digits_mlp", "bf16"), ("synthetic_mlp", "fp32")}
    changed = {r.run_id for r in bf16 if r.problem == "digits_mlp"}
    assert changed and not changed & {r.run_id for r in default}
    for run in bf16:
        assert RunSpec.from_dict(run.to_dict()).run_id == run.run_id
