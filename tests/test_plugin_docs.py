"""docs/plugins.md cannot drift from the code: its example plugins are the example package's code,
and running the code blocks extracted from the page puts both plugins through a matrix."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from kdbench.api import ATTACKS, DEFENSES, Access, DataAccess
from kdbench.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "plugins.md"
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```(\w+)\n(.*?)```", re.S)


def examples() -> dict[str, tuple[str, str]]:
    """path → (language, code) of every block the page marks as an example file."""
    return {path: (language, code) for path, language, code in EXAMPLE.findall(PAGE.read_text())}


def test_the_page_shows_an_attack_a_defense_and_their_entry_points():
    assert set(examples()) == {
        "tests/example_plugin/kdbench_example_plugin/label_only.py",
        "tests/example_plugin/kdbench_example_plugin/label_smoothing.py",
        "tests/example_plugin/pyproject.toml",
    }


@pytest.mark.parametrize("path", sorted(examples()))
def test_each_example_block_is_the_example_package_file(path):
    language, code = examples()[path]
    text = (REPO / path).read_text()
    if language == "python":  # the file is the block under a module docstring
        assert text.startswith('"""') and text.endswith("\n\n" + code), path
    else:
        assert text == code, path


def test_the_page_names_every_access_level_and_data_access():
    page = PAGE.read_text()
    for level in Access:
        assert f"`Access.{level.name}`" in page
    for access in DataAccess:
        assert f"`DataAccess.{access.name}`" in page
    for name in ("ctx.inputs", "ctx.input_format", "query_budget", "QueryBudgetExceeded", "perturb=", "serve="):
        assert name in page
    for entry in ("fit_supervised(", "fit_distillation(", "fit(", "fit_scratch(", "ctx.trained("):
        assert entry in page


@pytest.fixture
def page_plugins():
    """The page's two Python examples, executed as modules of their own (registering both)."""
    modules = []
    for path, (language, code) in sorted(examples().items()):
        if language != "python":
            continue
        module = types.ModuleType(f"plugins_md_{Path(path).stem}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        modules.append(module)
        exec(compile(code, f"{PAGE}:{Path(path).name}", "exec"), module.__dict__)
    try:
        yield
    finally:
        ATTACKS.unregister("label_only")
        DEFENSES.unregister("label_smoothing")
        for module in modules:
            sys.modules.pop(module.__name__, None)


def test_the_pages_plugins_run_through_the_matrix(tmp_path, page_plugins):
    args = ["run", "all", "preset=tiny", "quiet=true", f"results_dir={tmp_path}"]
    overrides = ["defense=[normal,label_smoothing]", "attack=[kd,label_only]", "defense.label_smoothing.sharpen=4"]
    assert main([*args, *overrides]) == 0
    records = pd.read_csv(tmp_path / "synthetic" / "records.csv")
    assert set(records.status) == {"ok"}
    assert set(zip(records.defense, records.attack, strict=True)) == {
        (d, a) for d in ("normal", "label_smoothing") for a in ("kd", "label_only")
    }
    # sharpening never moves the top-1 class: the same network's accuracy, served sharpened
    smoothed = records[records.defense == "label_smoothing"].teacher_acc
    assert smoothed.nunique() == 1


def test_the_pages_defense_refuses_a_bad_option_in_one_line(tmp_path, page_plugins, capsys):
    args = ["run", "all", "preset=tiny", "quiet=true", f"results_dir={tmp_path}", "defense=label_smoothing"]
    assert main([*args, "defense.label_smoothing.sharpen=0"]) == 2
    assert "defense.label_smoothing.sharpen must be > 0, got 0" in capsys.readouterr().err
