"""One import namespace (``kdbench``), a leaf plugin API, and no import cycle among the modules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, Path]:
    """The build backend's mapping of import names to folders, as pyproject.toml declares it
    (read by hand: tomllib needs Python 3.11, the project supports 3.10)."""
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-dir]\n", 1)[1].split("\n[", 1)[0]
    pairs = (line.split("=", 1) for line in section.splitlines() if "=" in line)
    return {name.strip().strip('"'): ROOT / folder.strip().strip('"') for name, folder in pairs}


def project_modules() -> dict[str, Path]:
    """Every module of the installed namespace by its dotted name (``kdbench.models.cnn``)."""
    dirs = package_dirs()
    modules: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            # a sub-folder mapped to a package of its own is that package's, not its parent's
            if not any(
                other != package and name.startswith(other + ".") for other in dirs if other.startswith(package)
            ):
                modules[name] = path
    return modules


def imported_modules(path: Path, module: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in candidates if name in known and name != module}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_project_modules():
    modules = project_modules()
    graph = {name: imported_modules(path, name, set(modules)) for name, path in modules.items()}
    assert len(modules) > 40 and "kdbench.attacks.kd" in modules and "kdbench.models.cnn" in modules
    assert graph["kdbench.attacks.kd"] >= {"kdbench.api"}  # the walker sees real edges
    assert find_cycle(graph) is None, f"import cycle: {' → '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("def f():\n    from pkg import b\n")
    assert imported_modules(source, "pkg.a", {"pkg.a", "pkg.b"}) == {"pkg.b"}
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}) == [
        "pkg.a",
        "pkg.b",
        "pkg.c",
        "pkg.a",
    ]
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": set()}) is None


def _python(code: str, cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_api_module_imports_no_plugin(tmp_path):
    result = _python(
        "import sys, kdbench.api\n"
        "plugins = sorted(m for m in sys.modules if m.startswith(('kdbench.attacks', 'kdbench.defenses')))\n"
        "print(plugins)",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_installed_namespace_outside_the_repository(tmp_path):
    """From a folder outside the checkout, ``kdbench.*`` imports and the folder names do not."""
    result = _python(
        "import importlib.util, kdbench.api, kdbench.attacks.kd, kdbench.defenses.nasty\n"
        "print([n for n in ('bench', 'attacks', 'defenses') if importlib.util.find_spec(n) is not None])",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_wheel_installs_only_the_kdbench_namespace(tmp_path):
    """A built wheel holds ``kdbench/`` and its config files only, and works installed in a fresh venv."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0:  # this venv's setuptools cannot build a wheel offline: an isolated build can
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("kdbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"kdbench"}
    assert "kdbench/attacks/kd.py" in names and "kdbench/defenses/nasty.py" in names
    assert "kdbench/conf/config.yaml" in names and "kdbench/conf/preset/default.yaml" in names
    dist_info = next(t for t in top_level if t.endswith(".dist-info"))
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "bench = kdbench.cli:program" in entry_points

    # a fresh venv that sees this one's packages (torch and the rest) but installs the wheel itself
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    site = _python("import site; print(site.getsitepackages()[0])", cwd=tmp_path).stdout.strip()
    (venv / "lib").mkdir(exist_ok=True)
    pth = next((venv / "lib").glob("python*/site-packages"))
    (pth / "parent.pth").write_text(site + "\n")  # the parent's packages, minus its editable kdbench
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = _python(
        "import importlib.util, kdbench, kdbench.api, kdbench.attacks.kd\n"
        "from kdbench.config.compose import compose_config\n"
        "compose_config([])\n"
        "print(kdbench.__file__)\n"
        "print([n for n in ('bench', 'attacks', 'defenses') if importlib.util.find_spec(n) is not None])",
        cwd=outside,
        python=python,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    where, leaked = result.stdout.strip().splitlines()
    assert str(venv) in where  # the wheel's copy, not the editable checkout
    assert leaked == "[]"


def engine_imports(path: Path) -> set[str]:
    """The ``kdbench.*`` modules (and names) ``path`` imports anywhere, as written."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "kdbench"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kdbench" and not node.level:
            found.add(node.module or "kdbench")
    return found


def boundary_violations(path: Path, own_package: str) -> list[str]:
    """What ``path``, a plugin module of ``own_package``, imports from the engine besides ``kdbench.api``."""
    allowed = ("kdbench.api", own_package)
    return sorted(m for m in engine_imports(path) if not any(m == a or m.startswith(a + ".") for a in allowed))


PLUGIN_FOLDERS = {
    "kdbench.attacks": ROOT / "attacks",
    "kdbench.defenses": ROOT / "defenses",
    # the third-party example plugin of docs/plugins.md: its package may import only the API
    "kdbench_example_plugin": ROOT / "tests" / "example_plugin" / "kdbench_example_plugin",
}


@pytest.mark.parametrize("package", sorted(PLUGIN_FOLDERS))
def test_plugins_import_nothing_from_the_engine_but_the_api(package):
    files = sorted(PLUGIN_FOLDERS[package].rglob("*.py"))
    assert files
    violations = {str(f.relative_to(ROOT)): v for f in files if (v := boundary_violations(f, package))}
    assert violations == {}, f"plugins may import only kdbench.api (and their own package): {violations}"


def test_the_boundary_check_sees_every_kind_of_engine_import(tmp_path):
    plugin = tmp_path / "p.py"
    plugin.write_text(
        "import kdbench.store.cache\n"
        "from kdbench.api import Attack\n"
        "from kdbench.attacks.student_recipe import student_recipe\n"
        "def f():\n"
        "    from kdbench.training.losses import soft_kl\n"
        "    from kdbench import errors\n"
    )
    assert boundary_violations(plugin, "kdbench.attacks") == [
        "kdbench",
        "kdbench.store.cache",
        "kdbench.training.losses",
    ]


def test_the_engine_folder_reads_as_its_architecture():
    """bench/ holds a few entry modules; the rest lives in subpackages named by concern."""
    top = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    assert len(top) <= 12, top
    packages = {p.name for p in (ROOT / "bench").iterdir() if (p / "__init__.py").exists()}
    assert {"plugins", "config", "data", "models", "training", "serving", "store", "matrix", "report"} <= packages


def test_the_suites_processes_let_waiting_openmp_threads_sleep(tmp_path):
    """Importing kdbench before torch sets OMP_WAIT_POLICY=PASSIVE for the process and the workers it
    starts; a policy the user chose is kept."""
    code = "import os, kdbench, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_WAIT_POLICY")}
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert chosen.stdout.strip() == "PASSIVE", chosen.stderr
    kept = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        timeout=300,
    )
    assert kept.stdout.strip() == "ACTIVE", kept.stderr
