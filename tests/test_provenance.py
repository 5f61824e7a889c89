"""No stale cell, ever: a cell is recomputed when its plugin's code or a checkpoint it was computed
from changes, and ``rerun=true`` recomputes the selected cells and retrains their networks."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace

import pytest
import torch

from kdbench.api import ATTACKS
from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.matrix.pending import pending_cells
from kdbench.matrix.run import run_matrix
from kdbench.plugins.fingerprint import code_fingerprint, source_files
from kdbench.progress import Progress
from kdbench.store.records import RecordStore

PLUGIN = '''
from dataclasses import dataclass

from kdbench.api import register_attack
from kdbench.attacks.kd import KDConfig, KnowledgeDistillation


@dataclass
class EchoConfig(KDConfig):
    pass


@register_attack("echo_probe", config=EchoConfig)
class Echo(KnowledgeDistillation):
    """KD under another name, to be edited by the test."""
    SCALE = 1.0
'''


@pytest.fixture
def probe_plugin(tmp_path, monkeypatch):
    """An attack plugin in its own module file, registered for this test only."""
    folder = tmp_path / "plugin_src"
    folder.mkdir()
    (folder / "echo_probe_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    importlib.import_module("echo_probe_plugin")
    yield folder / "echo_probe_plugin.py"
    ATTACKS.unregister("echo_probe")
    sys.modules.pop("echo_probe_plugin", None)


def tiny_plan(tmp_path, *overrides: str):
    cfg = compose_config(["preset=tiny", f"results_dir={tmp_path / 'results'}", "quiet=true", *overrides])
    return plan_from_config(cfg)


def test_the_source_hash_covers_the_plugin_module_and_the_package_modules_it_imports():
    files = {p.name for p in source_files("kdbench.attacks.deepinversion")}
    assert {"deepinversion.py", "student_recipe.py"} <= files
    assert "train.py" not in files  # the engine is not the plugin's code
    assert {p.name for p in source_files("kdbench.defenses.topk")} >= {"topk.py", "perturbation.py", "normal.py"}
    fingerprint = code_fingerprint("kdbench.attacks.kd")
    assert fingerprint["package"] == "kdbench" and len(fingerprint["source"]) == 12


def test_the_installed_distributions_are_read_once_and_again_for_a_newly_installed_package(monkeypatch):
    """Listing the distributions reads every installed file: once per process, except that a package
    missing from the list (installed since) makes it read the list again."""
    from kdbench.plugins import fingerprint

    installed = {"kdbench": ["kdbench"]}
    reads = []

    def packages_distributions():
        reads.append(1)
        return dict(installed)

    monkeypatch.setattr(fingerprint.importlib.metadata, "packages_distributions", packages_distributions)
    monkeypatch.setattr(fingerprint.importlib.metadata, "version", lambda name: "1.0")
    fingerprint._distributions_by_package.cache_clear()
    try:
        assert fingerprint._distribution("kdbench.attacks.kd") == ("kdbench", "1.0")
        assert fingerprint._distribution("kdbench.defenses.nasty") == ("kdbench", "1.0")
        assert len(reads) == 1
        installed["newplugin"] = ["new-plugin"]
        assert fingerprint._distribution("newplugin.attack") == ("new-plugin", "1.0")
        assert len(reads) == 2
    finally:
        fingerprint._distributions_by_package.cache_clear()


def test_editing_a_plugin_recomputes_exactly_its_cells(tmp_path, probe_plugin):
    plan = tiny_plan(tmp_path, "attack=[kd,echo_probe]")
    assert run_matrix(plan, Progress(quiet=True))  # 4 cells: normal, nasty × kd, echo_probe
    assert pending_cells(plan, RecordStore(plan.dataset_dir)) == []

    probe_plugin.write_text(PLUGIN.replace("SCALE = 1.0", "SCALE = 0.0"))  # the plugin's code changed
    plan = tiny_plan(tmp_path, "attack=[kd,echo_probe]")
    stale = sorted(cell.name for cell, _ in pending_cells(plan, RecordStore(plan.dataset_dir)))
    assert stale == ["digits_cnn__nasty__echo_probe__mlp__seed0", "digits_cnn__normal__echo_probe__mlp__seed0"]


def test_editing_a_defense_retrains_its_network(tmp_path, monkeypatch):
    """The key of a cached teacher holds the fingerprint of the module that trains it."""
    from kdbench.store import keys

    plan = tiny_plan(tmp_path, "defense=nasty")
    run_matrix(plan, Progress(quiet=True))
    before = {p.name for p in plan.cache_dir.glob("*.pt")}
    real = keys.code_fingerprint

    def edited(module: str):
        out = dict(real(module))
        if module == "kdbench.defenses.nasty":
            out["source"] = "edited"
        return out

    # every key is built in kdbench.store.keys: patching its fingerprint is what an edit changes
    monkeypatch.setattr(keys, "code_fingerprint", edited)
    run_matrix(replace(tiny_plan(tmp_path, "defense=nasty"), rerun=False), Progress(quiet=True))
    new = {p.name for p in plan.cache_dir.glob("*.pt")} - before
    assert len(new) == 1  # the nasty teacher, retrained; the normal adversary and the baseline reused


def test_a_replaced_checkpoint_recomputes_the_cells_computed_from_it(tmp_path):
    plan = tiny_plan(tmp_path, "attack=kd")
    records = run_matrix(plan, Progress(quiet=True))
    store = RecordStore(plan.dataset_dir)
    nasty = next(r for r in records if r.defense == "nasty")
    teacher_files = [name for name in nasty.details.weights if name in store.get(nasty.cell).details.weights]
    assert len(nasty.details.weights) == 3  # normal adversary, nasty teacher, mlp baseline
    normal = next(r for r in records if r.defense == "normal")
    only_nasty = sorted(set(nasty.details.weights) - set(normal.details.weights))
    assert len(only_nasty) == 1 and only_nasty[0] in teacher_files

    path = plan.cache_dir / only_nasty[0]
    payload = torch.load(path, weights_only=True)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] + 1.0  # another network, same architecture
    torch.save(payload, path)
    stale = [cell.name for cell, _ in pending_cells(plan, store)]
    assert stale == [nasty.cell]


def test_rerun_recomputes_the_selected_cells_and_retrains_their_networks(tmp_path):
    plan = tiny_plan(tmp_path, "attack=kd")
    run_matrix(plan, Progress(quiet=True))
    stamps = {p.name: p.stat().st_mtime_ns for p in plan.cache_dir.glob("*.pt")}
    records_before = {r.cell: r for r in RecordStore(plan.dataset_dir).all()}

    rerun = tiny_plan(tmp_path, "attack=kd", "defense=nasty", "rerun=true")
    done = run_matrix(rerun, Progress(quiet=True))
    assert [r.cell for r in done] == ["digits_cnn__nasty__kd__mlp__seed0"]  # the normal cell is not selected
    after = {p.name: p.stat().st_mtime_ns for p in plan.cache_dir.glob("*.pt")}
    assert set(after) == set(stamps)
    assert all(after[name] > stamps[name] for name in done[0].details.weights)  # each retrained
    assert sum(after[n] > stamps[n] for n in stamps) == 3  # nasty, its normal adversary, the baseline
    store = RecordStore(plan.dataset_dir)
    normal_cell = "digits_cnn__normal__kd__mlp__seed0"
    assert store.get(normal_cell) == records_before[normal_cell]
    # same seed, same code: the retrained networks and the recomputed cell are the same as before
    assert store.get(done[0].cell).student_acc == records_before[done[0].cell].student_acc


def test_rerun_computes_a_selected_cell_that_has_no_record_yet(tmp_path):
    """rerun=true on cells never computed in this folder (it once failed reading their missing record)."""
    run_matrix(tiny_plan(tmp_path, "attack=kd", "defense=normal"), Progress(quiet=True))
    rerun = tiny_plan(tmp_path, "attack=kd", "defense=nasty", "rerun=true")
    done = run_matrix(rerun, Progress(quiet=True))
    assert [(r.cell, r.status) for r in done] == [("digits_cnn__nasty__kd__mlp__seed0", "ok")]


def test_rerun_must_be_a_boolean(tmp_path):
    from kdbench.errors import ConfigError

    with pytest.raises(ConfigError, match="rerun must be true or false"):
        tiny_plan(tmp_path, "rerun=maybe")


def test_a_run_never_writes_into_the_reference_folder(tmp_path):
    from kdbench.errors import ConfigError

    with pytest.raises(ConfigError, match="committed reference folder"):
        plan_from_config(compose_config(["preset=tiny", f"reference_dir={tmp_path}", f"results_dir={tmp_path}"]))


def test_a_module_parsed_once_is_parsed_again_once_edited(tmp_path):
    from kdbench.plugins.fingerprint import _imports

    module = tmp_path / "probe_plugin.py"
    module.write_text("import kdbench.training.losses\n")
    assert _imports(module, "probe_plugin") == {"kdbench.training.losses"}
    module.write_text("import kdbench.training.loop as t\n")  # another size: another version of the file
    assert _imports(module, "probe_plugin") == {"kdbench.training.loop"}


RUN_OUTPUTS = (".pt", ".pth", ".ckpt", ".lock", ".answers", ".tmp")


def test_the_committed_tree_holds_no_file_a_run_writes_beside_its_records():
    """Checkpoints, lock files and answer memos belong to a run's folder, never to the repository: a
    command once run with a folder inside results/reference left them there, and they were committed."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {root}")
    tracked = listed.stdout.splitlines()
    assert tracked, "git ls-files listed nothing"
    assert [f for f in tracked if f.endswith(RUN_OUTPUTS) or "/.cache/" in f] == []
