"""The optimizer registry takes every default and range from the constructors (lsbench.optim.registry)."""

import inspect

import pytest
import torch

from lsbench.optim import OPTIMIZERS, SLS, HParam, OptimizerEntry, TrainingContext, get_optimizer
from lsbench.optim._hparams import POSITIVE, UNBOUNDED, Range, check_ranges

CONTEXT = TrainingContext(total_steps=100, batch_size=32, train_size=1_000)


def constructor_default(factory, name):
    """The default of keyword ``name`` in the first constructor of ``factory``'s class hierarchy that takes it."""
    for cls in factory.__mro__:
        init = vars(cls).get("__init__")
        if init is not None and name in inspect.signature(init).parameters:
            return inspect.signature(init).parameters[name].default
    raise AssertionError(f"no constructor of {factory.__name__} takes {name}")


def plain(value):
    """Tuples as lists, as a grid (YAML/JSON) writes them."""
    return [plain(v) for v in value] if isinstance(value, tuple | list) else value


def construct(entry, **values):
    """The constructor alone, as a direct user calls it (no registry validation)."""
    return entry.factory([torch.zeros(1, requires_grad=True)], **entry.fixed, **entry.context(CONTEXT), **values)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_registry_default_is_the_constructor_default(name):
    entry = OPTIMIZERS[name]
    for hp in entry.hparams:
        assert hp.default == plain(constructor_default(entry.factory, hp.name)), hp.name
    built, direct = entry.build([torch.zeros(1, requires_grad=True)], {}, CONTEXT), construct(entry)
    assert {k: v for k, v in built.defaults.items() if k != "params"} == direct.defaults
    assert getattr(built, "noise_factor", None) == getattr(direct, "noise_factor", None)


def boundary_cases():
    """Per registered hyperparameter with a declared range: its bounds, values beyond them, None, a bad choice."""
    for name, entry in OPTIMIZERS.items():
        for hp in entry.hparams:
            values = []
            step = 1 if hp.type is int else 1.0
            if hp.low is not None:
                values += [hp.type(hp.low), hp.type(hp.low) - step]
            if hp.high is not None:
                values += [hp.type(hp.high), hp.type(hp.high) + step]
            if hp.choices is not None:
                values += [*hp.choices, "no-such-choice"]
            if hp.range != UNBOUNDED:
                values.append(None)
            for value in values:
                yield pytest.param(name, hp.name, value, id=f"{name}-{hp.name}={value!r}")


@pytest.mark.parametrize(("name", "hparam", "value"), list(boundary_cases()))
def test_registry_rejects_exactly_the_boundary_values_the_constructor_rejects(name, hparam, value):
    entry = OPTIMIZERS[name]
    try:
        entry.hparam(hparam).validate(value)
        registry_accepts = True
    except ValueError:
        registry_accepts = False
    try:
        construct(entry, **{hparam: value})
        constructor_accepts = True
    except ValueError:
        constructor_accepts = False
    assert registry_accepts == constructor_accepts


def test_sls_initial_step_size_zero_is_rejected_by_the_registry_as_by_the_constructor():
    with pytest.raises(ValueError, match=r"initial_step_size: 0\.0 is at or below the exclusive minimum 0\.0"):
        get_optimizer("sls").resolve({"initial_step_size": 0})
    with pytest.raises(ValueError, match=r"Invalid initial_step_size: 0 \(must be > 0\)"):
        SLS([torch.zeros(1, requires_grad=True)], initial_step_size=0)
    assert get_optimizer("sls").resolve({"initial_step_size": 1e-12})["initial_step_size"] == 1e-12


def test_the_sgd_hd_default_is_the_constructors_published_one():
    # the registry said 1e-3 while SGDHD's signature and docstring give the published code's 1e-6
    assert get_optimizer("sgd_hd").hparam("hypergradient_lr").default == 1e-6


def test_a_declaration_may_not_restate_a_different_default_or_range():
    declared = HParam("initial_step_size", float, "η0")
    entry = OptimizerEntry("sls_copy", "", SLS, (declared,))
    assert entry.hparams[0].default == 1.0 and entry.hparams[0].range == POSITIVE
    assert declared.default is not entry.hparams[0].default  # the declaration itself is left alone
    OptimizerEntry("sls_same", "", SLS, entry.hparams)  # a completed entry may be declared again
    with pytest.raises(TypeError, match="default of 'initial_step_size' is the constructor's"):
        OptimizerEntry("sls_bad", "", SLS, (HParam("initial_step_size", float, "η0", default=2.0),))
    with pytest.raises(TypeError, match="declare the range of 'initial_step_size' in the constructor's RANGES"):
        OptimizerEntry("sls_bad", "", SLS, (HParam("initial_step_size", float, "η0", range=Range(low=0.0)),))
    with pytest.raises(TypeError, match="'step_size' is not a constructor argument"):
        OptimizerEntry("sls_bad", "", SLS, (HParam("step_size", float, "η0"),))


@pytest.mark.parametrize(
    ("bounds", "value", "message"),
    [
        (Range(low=0.0, low_exclusive=True), 0.0, "Invalid x: 0.0 (must be > 0)"),
        (Range(low=1), 0, "Invalid x: 0 (must be >= 1)"),
        (Range(low=0.0, high=1.0, high_exclusive=True), 1.0, r"Invalid x: 1.0 (must be in [0, 1))"),
        (Range(low=0.0, high=1.0, low_exclusive=True), 1.5, r"Invalid x: 1.5 (must be in (0, 1])"),
        (Range(high=2.0, high_exclusive=True), 2.0, "Invalid x: 2.0 (must be < 2)"),
        (Range(choices=("a", "b")), "c", "Invalid x: 'c' (must be one of a, b)"),
        (Range(low=0.0), None, "Invalid x: None (must not be None)"),
    ],
)
def test_constructor_messages_say_the_valid_range(bounds, value, message):
    with pytest.raises(ValueError) as raised:
        bounds.check("x", value)
    assert str(raised.value) == message
    assert bounds.problem(value)


def test_range_accepts_its_bounds_unless_exclusive_and_none_only_when_nullable():
    closed, open_ = Range(low=0.0, high=1.0), Range(0.0, 1.0, low_exclusive=True, high_exclusive=True)
    assert closed.problem(0.0) == closed.problem(1.0) == ""
    assert open_.problem(0.0) and open_.problem(1.0) and open_.problem(0.5) == ""
    assert Range(nullable=True).problem(None) == "" and UNBOUNDED.problem(None)


def test_check_ranges_refuses_a_declaration_for_an_argument_that_does_not_exist():
    with pytest.raises(TypeError, match="RANGES declares y"):
        check_ranges({"y": POSITIVE}, {"x": 1.0})
    check_ranges({"x": POSITIVE}, {"x": 1.0, "other": -1})
