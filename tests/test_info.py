"""``lsbench info``: every optimizer with its hyperparameters and every problem, as tables or JSON."""

import argparse
import json
import subprocess
import sys

from lsbench.info import add_info_parser, collect, format_text
from lsbench.optim import OPTIMIZERS
from lsbench.problems import PROBLEMS

NEW_OPTIMIZERS = ("gols_i", "alig", "sgd_hd", "cocob")


def run_info(*args: str) -> int:
    """The ``info`` subcommand as the CLI wires it (add_info_parser), without the other commands."""
    parser = argparse.ArgumentParser(prog="lsbench")
    add_info_parser(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["info", *args])
    return parsed.handler(parsed)


def test_json_lists_every_optimizer_and_problem(capsys):
    assert run_info("--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"optimizers", "problems"}
    assert list(info["optimizers"]) == list(OPTIMIZERS)
    assert set(NEW_OPTIMIZERS) <= set(info["optimizers"])
    for name, entry in OPTIMIZERS.items():
        described = info["optimizers"][name]
        assert described["description"] == entry.description
        assert list(described["hyperparameters"]) == [hp.name for hp in entry.hparams]
        for hp in entry.hparams:
            fields = described["hyperparameters"][hp.name]
            assert set(fields) == {"type", "default", "low", "high", "choices", "nullable", "symbol", "help"}
            assert fields["default"] == hp.default and fields["symbol"] == hp.symbol and fields["help"] == hp.help
            assert fields["type"] in {"float", "int", "bool", "str", "list"}
    assert list(info["problems"]) == list(PROBLEMS)
    digits = info["problems"]["digits_mlp"]
    assert digits["batch_size"] == 32 and digits["steps"] == 600 and digits["model"] == "mlp"
    assert {"dataset", "description", "weight_decay", "eval_every"} <= set(digits)


def test_thesis_symbols_are_declared():
    symbols = {name: {hp.name: hp.symbol for hp in entry.hparams} for name, entry in OPTIMIZERS.items()}
    assert symbols["pal"] == {
        "measuring_step_size": "μ",
        "update_step_adaptation": "α",
        "direction_adaptation": "β",
        "max_step_size": "s_max",
        "noise_factor": "ε",
    }
    assert symbols["sgd"]["lr"] == "λ" and symbols["sgd"]["momentum"] == "α"
    assert symbols["sls"]["max_step_size"] == "μ_max" and symbols["labpal_sgd"]["sgd_steps"] == "n_SGD"
    assert symbols["gols_i"] == {
        "initial_step_size": "μ",
        "momentum": "β",
        "step_size_scaling": "η",
        "wolfe_c2": "c2",
        "noise_factor": "ε",
    }
    assert symbols["alig"] == {"max_lr": "λ", "momentum": "β", "epsilon": "ϵ"}
    assert symbols["sgd_hd"]["hypergradient_lr"] == "β" and symbols["cocob"] == {"alpha": "α"}


def test_text_output_is_a_readable_table_per_optimizer(capsys):
    assert run_info() == 0
    text = capsys.readouterr().out
    assert text == format_text(collect()) + "\n"
    for name, entry in OPTIMIZERS.items():
        assert f"{name} -- {entry.description}" in text
    lines = text.splitlines()
    start = lines.index(f"gols_i -- {OPTIMIZERS['gols_i'].description}")
    header, rule, *rows = lines[start + 1 : start + 3 + len(OPTIMIZERS["gols_i"].hparams)]
    assert header.split()[:5] == ["hyperparameter", "symbol", "type", "default", "range"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert rows[2].split()[:5] == ["step_size_scaling", "η", "float", "2.0", ">="]
    column = header.index("default")  # columns are aligned
    assert all(row[column - 2 : column] == "  " for row in rows)
    assert "digits_mlp" in text and "problem" in text


def test_python_m_lsbench_info_json():
    done = subprocess.run([sys.executable, "-m", "lsbench", "info", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["optimizers"]) == set(OPTIMIZERS)


def test_lsbench_info_json_through_the_cli_entry(capsys):
    from lsbench.cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"optimizers", "problems"} and "pal" in info["optimizers"]
