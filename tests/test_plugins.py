"""Third-party plugins: an installed package's entry point adds an attack to `bench list` and the matrix."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXAMPLE = Path(__file__).parent / "example_plugin"


def bench(*args: str, path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kdbench.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package installed (with its entry-point metadata) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("src")
    subprocess.run(["cp", "-r", str(EXAMPLE), str(build)], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(build / EXAMPLE.name),
        ],
        check=True,
        capture_output=True,
    )
    assert list(target.glob("kdbench_example_plugin-*.dist-info/entry_points.txt"))
    return target


def test_an_installed_plugin_is_listed(installed, tmp_path):
    result = bench("list", path=installed, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "label_only" in result.stdout and "top1_label" in result.stdout


def test_an_installed_plugin_runs_in_the_matrix_and_the_report(installed, tmp_path):
    result = bench(
        "run",
        "preset=tiny",
        "quiet=true",
        "defense=normal",
        "attack=[kd,label_only]",
        f"results_dir={tmp_path}",
        path=installed,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    records = pd.read_csv(tmp_path / "synthetic" / "records.csv")
    assert set(records.attack) == {"kd", "label_only"} and set(records.status) == {"ok"}
    assert "label_only → mlp" in (tmp_path / "synthetic" / "leaderboard.md").read_text()


def test_a_plugin_that_fails_to_import_names_its_package(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kdbench.attacks]\nbroken = broken_plugin.missing_module\n")
    result = bench("list", path=site, cwd=tmp_path)
    assert result.returncode == 2
    assert "plugin 'broken' of package 'broken-plugin'" in result.stderr
    assert "failed to import: ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_reusing_a_taken_name_is_refused_naming_both(tmp_path):
    site = tmp_path / "site"
    (site / "dup_plugin").mkdir(parents=True)
    (site / "dup_plugin" / "__init__.py").write_text(
        "from kdbench.api import register_attack\n"
        "from kdbench.attacks.kd import KDConfig, KnowledgeDistillation\n"
        "@register_attack('kd', config=KDConfig)\n"
        "class Copy(KnowledgeDistillation):\n"
        "    pass\n"
    )
    dist = site / "dup_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dup-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kdbench.attacks]\nkd = dup_plugin\n")
    result = bench("list", path=site, cwd=tmp_path)
    assert result.returncode == 2
    assert "'kd' is registered twice: by kdbench.attacks.kd and by dup_plugin" in result.stderr
    assert "package 'dup-plugin'" in result.stderr


def test_an_entry_point_named_otherwise_than_its_plugin_is_refused_naming_both(tmp_path):
    """`attack=<name>` finds the name the decorator registered: an entry point named otherwise would
    list a plugin that its own name cannot select."""
    site = tmp_path / "site"
    (site / "renamed_plugin").mkdir(parents=True)
    (site / "renamed_plugin" / "__init__.py").write_text(
        "from kdbench.api import register_attack\n"
        "from kdbench.attacks.kd import KDConfig, KnowledgeDistillation\n"
        "@register_attack('label_copy', config=KDConfig)\n"
        "class Copy(KnowledgeDistillation):\n"
        "    pass\n"
    )
    dist = site / "renamed_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: renamed-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kdbench.attacks]\nlabel_only = renamed_plugin\n")
    result = bench("list", path=site, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "plugin 'label_only' of package 'renamed-plugin'" in result.stderr
    assert "registered no attack named 'label_only' (it registered 'label_copy')" in result.stderr
