"""Bring your own model: a teacher from a file, any architecture, the owner's normalisation,
honest records, defense=file and kdbench.evaluate (issue 18)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdbench.config.compose import compose_config
from kdbench.config.plan import plan_from_config
from kdbench.errors import ConfigError
from kdbench.matrix.run import check_runnable
from kdbench.models import create_model
from kdbench.models.weights import load_weights
from kdbench.store.keys import cell_spec

BENCH = str(Path(sys.executable).with_name("bench"))

# The owner's network and training script: plain PyTorch, nothing from kdbench.
OWNER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class DigitsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))


    def make_not_a_module():
        return 42
    """
)


def digits_split():
    """sklearn's digits as the owner splits them: stratified 80/20, random_state=0, pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(bunch.target)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y.numpy(), random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * int((model.eval()(x).argmax(1) == y).sum()) / len(y)


def sha256(path: Path) -> str:
    """A weight file's identity: the sha256 of its tensors, however the file was saved."""
    from kdbench.models.weights import weights_sha256

    return weights_sha256(torch.load(path, weights_only=True))


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """A folder with the owner's module and two networks trained in plain PyTorch (4 epochs, Adam),
    their state_dicts in a.pt and b.pt, and their test accuracies."""
    folder = tmp_path_factory.mktemp("owner")
    (folder / "owner_nets.py").write_text(OWNER_MODULE)
    sys.path.insert(0, str(folder))
    import owner_nets  # pyright: ignore[reportMissingImports]  (written by this fixture)

    x_train, y_train, x_test, y_test = digits_split()
    accuracies = {}
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        net = owner_nets.DigitsNet()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(4):
            for batch in torch.randperm(len(y_train)).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(x_train[batch]), y_train[batch]).backward()
                optimizer.step()
        torch.save(net.state_dict(), folder / name)
        accuracies[name] = accuracy(net, x_test, y_test)
    yield folder, accuracies, owner_nets
    sys.path.remove(str(folder))


def plan_of(*overrides: str):
    return plan_from_config(compose_config(list(overrides)))


OWNED = ["teacher=owner_nets:DigitsNet", "dataset.normalize=[0,1]", "attack=kd", "student=mlp", "defense=normal"]


# -- the acceptance runs ----------------------------------------------------------------------


def _bench(folder: Path, results: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BENCH, "run", "all", *overrides, f"results_dir={results}", "workers=1", "quiet=true", "reference_dir=null"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_cli_attacks_the_owners_network_and_a_new_file_recomputes(owner, tmp_path):
    folder, accuracies, _ = owner
    weights = folder / "current.pt"
    weights.write_bytes((folder / "a.pt").read_bytes())
    args = [
        "teacher=owner_nets:DigitsNet",
        f"teacher_weights={weights}",
        "teacher_name=owned_digits",
        "dataset.normalize=[0,1]",
        "defense=[normal,nasty]",
        "attack=[kd,blackbox]",
        "attack_variants=null",  # exactly these two attacks (digits adds kd_t20 to kd otherwise)
        "student=mlp",
        "train.epochs=2",
    ]
    done = _bench(folder, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "digits" / "records").glob("*.json"))]
    assert sorted((r["defense"], r["attack"]) for r in records) == [
        ("nasty", "blackbox"),
        ("nasty", "kd"),
        ("normal", "blackbox"),
        ("normal", "kd"),
    ]
    assert all(r["status"] == "ok" for r in records)
    for r in records:
        file = r["details"]["files"]["teacher_weights"]
        assert file["sha256"] == sha256(folder / "a.pt")
        assert "cannot know whether that file saw the test split" in file["test_split"]
    normal = next(r for r in records if r["defense"] == "normal")
    # the loaded network itself, measured on the dataset's test split: as the owner measures it
    assert normal["teacher_acc"] == pytest.approx(accuracies["a.pt"], abs=1e-6)
    board = (tmp_path / "digits" / "leaderboard.md").read_text()
    assert f"owned_digits (owner_nets:DigitsNet, weights sha256 {sha256(folder / 'a.pt')[:12]})" in board
    assert sha256(folder / "a.pt") in board and "cannot know whether that file saw the test split" in board
    # the terminal says it too, with the row's name
    said = " ".join(done.stdout.split())  # the terminal wraps it
    assert f"teacher_weights={weights} as owned_digits (owner_nets:DigitsNet, weights sha256 " in said
    assert "the suite cannot know whether that file saw the test split" in said

    weights.write_bytes((folder / "b.pt").read_bytes())  # another network in the same file
    again = _bench(folder, tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "4 cell(s) computed, 0 reused" in again.stdout
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "digits" / "records").glob("*.json"))]
    assert {r["details"]["files"]["teacher_weights"]["sha256"] for r in records} == {sha256(folder / "b.pt")}
    normal = next(r for r in records if r["defense"] == "normal")
    assert normal["teacher_acc"] == pytest.approx(accuracies["b.pt"], abs=1e-6)
    assert "0 cell(s) computed, 4 reused" in _bench(folder, tmp_path, *args).stdout


@pytest.mark.slow
def test_evaluate_from_python(owner, tmp_path, capsys):
    import kdbench

    folder, accuracies, owner_nets = owner
    net = owner_nets.DigitsNet()
    net.load_state_dict(torch.load(folder / "a.pt", weights_only=True))
    frame = kdbench.evaluate(
        net,
        dataset="digits",
        attacks=["kd", "blackbox"],
        students=["mlp"],
        normalize="[0,1]",
        defenses=["normal", "file"],  # beside it, a network "defended" elsewhere: here the other file
        name="from_python",
        results_dir=tmp_path,
        overrides={"defense.file.path": str(folder / "b.pt")},
        train__epochs=2,
    )
    assert sorted(zip(frame.defense, frame.attack, strict=True)) == [
        ("file", "blackbox"),
        ("file", "kd"),
        ("normal", "blackbox"),
        ("normal", "kd"),
    ]
    assert (frame.status == "ok").all()
    by_defense = frame.groupby("defense").teacher_acc.unique()
    assert by_defense["normal"].tolist() == pytest.approx([accuracies["a.pt"]], abs=1e-6)
    assert by_defense["file"].tolist() == pytest.approx([accuracies["b.pt"]], abs=1e-6)
    assert frame.teacher.str.startswith("from_python (owner_nets:DigitsNet").all()  # one group of rows
    # the weights evaluate saved again have the identity the CLI gives the owner's own file of them
    assert (frame.teacher == f"from_python (owner_nets:DigitsNet, weights sha256 {sha256(folder / 'a.pt')[:12]})").all()
    saved = next((tmp_path / "digits" / "owned").glob("*.pt"))
    assert saved.read_bytes() != (folder / "a.pt").read_bytes() and saved.stem == sha256(folder / "a.pt")
    csv = (tmp_path / "digits" / "records.csv").read_text().splitlines()[0].split(",")
    assert list(frame.columns) == csv
    # it says what it does while it runs, and ends with the run's summary, as bench run does
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "network scratch mlp (seed 0): ok, acc " in printed.err and "× kd → mlp (seed 0): ok" in printed.err
    assert "kdbench: digits: ranking" in printed.err and "Finding: " in printed.err
    again = kdbench.evaluate(
        net,
        attacks=["kd", "blackbox"],
        normalize="[0,1]",
        defenses=["normal", "file"],
        name="from_python",
        results_dir=tmp_path,
        overrides={"defense.file.path": str(folder / "b.pt")},
        train__epochs=2,
        quiet=True,
    )
    assert again.wall_s.tolist() == frame.wall_s.tolist()  # the same records, reused, not recomputed
    assert capsys.readouterr() == ("", "")  # quiet: nothing at all


def test_evaluate_hands_python_values_to_the_run_without_override_text(owner, tmp_path):
    """A folder name that Hydra's override grammar would split (comma, brackets, quotes, '=') and a
    normalisation given as a Python list reach the run as the values they are."""
    import kdbench

    folder, accuracies, owner_nets = owner
    net = owner_nets.DigitsNet()
    net.load_state_dict(torch.load(folder / "a.pt", weights_only=True))
    odd = tmp_path / "runs, v2 [a=b] 'x'"
    frame = kdbench.evaluate(
        net, attacks=["kd"], defenses=["normal"], normalize=[0, 1], results_dir=odd, train__epochs=2
    )
    assert frame.status.tolist() == ["ok"] and (odd / "digits" / "records.csv").exists()
    assert frame.teacher_acc.tolist() == pytest.approx([accuracies["a.pt"]], abs=1e-6)


def test_a_config_group_is_not_set_as_a_value():
    from kdbench.config.compose import compose_config

    with pytest.raises(ConfigError, match=r"^attack is a config group: choose it as an override"):
        compose_config([], {"attack": ["kd"]})
    with pytest.raises(ConfigError, match=r"^train\.epochz: "):
        compose_config([], {"train.epochz": 3})


# -- official Nasty-Teacher checkpoints --------------------------------------------------------


def official_resnet18_keys() -> list[str]:
    """The state_dict names of model/resnet.py's ResNet18 in VITA-Group/Nasty-Teacher."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{b}" for b in bn)]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *(f"{p}.bn1.{b}" for b in bn), f"{p}.conv2.weight"]
            keys += [f"{p}.bn2.{b}" for b in bn]
            if layer > 1 and block == 0:
                keys += [f"{p}.shortcut.0.weight", *(f"{p}.shortcut.1.{b}" for b in bn)]
    return [*keys, "linear.weight", "linear.bias"]


def official_preresnet20_keys() -> list[str]:
    """model/preresnet.py's PreResNet(depth=20): BasicBlocks, bn1/conv1/bn2/conv2, downsample.0."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"]
    for layer in range(1, 4):
        for block in range(3):
            p = f"layer{layer}.{block}"
            keys += [*(f"{p}.bn1.{b}" for b in bn), f"{p}.conv1.weight", *(f"{p}.bn2.{b}" for b in bn)]
            keys += [f"{p}.conv2.weight"]
            if layer > 1 and block == 0:
                keys += [f"{p}.downsample.0.weight"]
    return [*keys, *(f"bn.{b}" for b in bn), "fc.weight", "fc.bias"]


def official_cnn_keys() -> list[str]:
    """model/net.py's Net (num_channels 32): conv1..3 with bn1..3, fc1, fcbn1, fc2."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = []
    for i in (1, 2, 3):
        keys += [f"conv{i}.weight", f"conv{i}.bias", *(f"bn{i}.{b}" for b in bn)]
    return [*keys, "fc1.weight", "fc1.bias", *(f"fcbn1.{b}" for b in bn), "fc2.weight", "fc2.bias"]


# shapes the official code gives these parameters (10 classes, 32×32 RGB)
OFFICIAL_SHAPES = {
    "resnet18": {"linear.weight": [10, 512], "layer2.0.shortcut.0.weight": [128, 64, 1, 1]},
    "resnetc20": {"fc.weight": [10, 64], "layer3.0.downsample.0.weight": [64, 32, 1, 1], "bn.weight": [64]},
    "cnn": {"fc1.weight": [128, 4 * 4 * 128], "conv3.weight": [128, 64, 3, 3], "fc2.weight": [10, 128]},
}


@pytest.mark.parametrize(
    ("arch", "official_keys"),
    [("resnet18", official_resnet18_keys), ("resnetc20", official_preresnet20_keys), ("cnn", official_cnn_keys)],
)
@pytest.mark.parametrize("data_parallel", [False, True])
def test_official_best_model_tar_loads_with_the_same_logits(tmp_path, arch, official_keys, data_parallel):
    torch.manual_seed(0)
    source = create_model(arch, 10, (3, 32, 32))
    for module in source.modules():  # BatchNorm statistics and affine terms that are not the defaults
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    ours = source.state_dict()
    names = official_keys()
    assert len(names) == len(ours)
    # both codes register their parameters in the same order: pair them by position
    official = dict(zip(names, (v.clone() for v in ours.values()), strict=True))
    for name, shape in OFFICIAL_SHAPES[arch].items():
        assert list(official[name].shape) == shape
    prefix = "module." if data_parallel else ""
    checkpoint = {
        "epoch": 159,
        "state_dict": {prefix + k: v for k, v in official.items()},
        "optim_dict": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
    }
    path = tmp_path / "best_model.tar"
    torch.save(checkpoint, path)
    loaded = create_model(arch, 10, (3, 32, 32))
    load_weights(loaded, path, arch)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), source.eval()(x))


def test_safetensors_and_state_dict_files_load(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_model("digits_cnn", 10, (1, 8, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        loaded = create_model("digits_cnn", 10, (1, 8, 8))
        load_weights(loaded, tmp_path / name, "digits_cnn")
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), source(x))


# -- bad input: one clear line, nothing trained ----------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher_weights=.*nothere\.pt: no such file"):
        plan_of("teacher_weights=" + str(tmp_path / "nothere.pt"))


def test_file_for_another_architecture_names_the_first_mismatching_parameter(tmp_path):
    torch.save(create_model("mlp", 10, (1, 8, 8)).state_dict(), tmp_path / "mlp.pt")
    plan = plan_of(f"results_dir={tmp_path}", f"teacher_weights={tmp_path / 'mlp.pt'}", "teacher=digits_cnn")
    with pytest.raises(ConfigError, match=r"does not fit architecture 'digits_cnn': parameter 'body\.0\.weight'"):
        check_runnable(plan)
    assert not (tmp_path / "digits" / ".cache").exists()


class _Payload:
    """Unpickling this would create a file: a payload that runs code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_refused_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": _Payload(str(marker))}, tmp_path / "evil.pt")
    # refused while the run is planned: the weights' sha256 is their identity, read safely
    with pytest.raises(ConfigError, match=r"is not plain tensors: it holds pickled code or objects .*never runs code"):
        plan_of(f"results_dir={tmp_path}", f"teacher_weights={tmp_path / 'evil.pt'}")
    assert not marker.exists()


def test_import_path_that_does_not_import():
    with pytest.raises(ConfigError, match=r"module 'no_such_owner_module' does not import"):
        plan_of("teacher=no_such_owner_module:Net")


def test_factory_that_returns_no_module(owner):
    with pytest.raises(ConfigError, match=r"returned a int, not a torch.nn.Module"):
        plan_of("student=owner_nets:make_not_a_module")


def test_normalisation_that_does_not_fit_the_images(owner, tmp_path):
    folder, _, _ = owner
    plan = plan_of(
        *OWNED[:1],
        *OWNED[2:4],
        f"teacher_weights={folder / 'a.pt'}",
        "dataset.normalize={mean:[0.5,0.5,0.5],std:[0.2,0.2,0.2]}",
        f"results_dir={tmp_path}",
    )
    with pytest.raises(ConfigError, match=r"gives 3 channels, but digits's images have 1"):
        check_runnable(plan)
    with pytest.raises(ConfigError, match=r"dataset.normalize='sepia': unknown"):
        plan_of("dataset.normalize=sepia")


@pytest.mark.parametrize("declared", ["[0,255]", "{mean:[0.9],std:[0.05]}"])
def test_a_network_served_other_inputs_than_it_was_trained_on_stops_naming_the_better_format(owner, tmp_path, declared):
    """The owner's network was trained on pixels in [0, 1]: declared far from that, it still scores a
    plausible figure, but clearly less than under a common format, and the run stops before any
    attack, naming that format. (Declared [-1,1] or null, this small network scores within 2 points
    of [0,1] on digits, and runs.)"""
    folder, _, _ = owner
    plan = plan_of(*OWNED[:1], *OWNED[2:4], f"teacher_weights={folder / 'a.pt'}", f"dataset.normalize={declared}")
    plan = replace(plan, results_dir=tmp_path, cache_dir=tmp_path / "cache")
    shown = declared.replace("{mean:[0.9],std:[0.05]}", "{'mean': [0.9], 'std': [0.05]}").replace(" ", "")
    with pytest.raises(ConfigError) as refused:
        check_runnable(plan)
    message = str(refused.value)
    assert re.search(
        rf"with dataset.normalize={re.escape(shown)} but [\d.]+ % with dataset.normalize=(null|\[0,1\]) ", message
    )
    assert "likely trained on other inputs" in message
    plan = plan_of(*OWNED[:4], f"teacher_weights={folder / 'a.pt'}")
    check_runnable(replace(plan, results_dir=tmp_path, cache_dir=tmp_path / "cache"))  # declared right: runs


def test_an_untrained_network_stops_before_any_attack(owner, tmp_path):
    _, _, owner_nets = owner
    torch.manual_seed(3)
    torch.save(owner_nets.DigitsNet().state_dict(), tmp_path / "random.pt")
    plan = plan_of(*OWNED[:4], f"teacher_weights={tmp_path / 'random.pt'}", f"results_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"untrained or expects other inputs"):
        check_runnable(plan)


def test_dafl_names_the_methods_a_model_must_expose(owner):
    with pytest.raises(ConfigError, match=r"attack 'dafl' needs .* forward_features\(x\) .* head"):
        plan_of("teacher=owner_nets:DigitsNet", "attack=dafl")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [BENCH, "run", "all", f"teacher_weights={tmp_path / 'missing.pt'}", f"results_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: teacher_weights=")
    assert not (tmp_path / "digits").exists()


# -- keys, defense=file ---------------------------------------------------------------------


def test_the_files_content_is_part_of_every_key(owner, tmp_path):
    folder, _, _ = owner
    a, b = (plan_of(*OWNED, f"teacher_weights={folder / n}") for n in ("a.pt", "b.pt"))
    cell = a.cells[0]
    assert cell_spec(a, cell) != cell_spec(b, cell)
    assert cell_spec(a, cell)["teacher_weights"] == sha256(folder / "a.pt")
    d1, d2 = (plan_of(*OWNED[:4], "defense=file", f"defense.file.path={folder / n}") for n in ("a.pt", "b.pt"))
    assert cell_spec(d1, d1.cells[0])["defense"]["file"]["sha256"] == sha256(folder / "a.pt")
    assert cell_spec(d1, d1.cells[0]) != cell_spec(d2, d2.cells[0])


def test_defense_file_needs_a_path_that_exists(tmp_path):
    with pytest.raises(ConfigError, match=r"defense\.file\.path is required: the defended network's weights file"):
        plan_of("defense=file")
    with pytest.raises(ConfigError, match=r"defense.file.path=.*gone\.pt: no such file"):
        plan_of("defense=file", f"defense.file.path={tmp_path / 'gone.pt'}")


def test_a_model_without_head_takes_an_auxiliary_head(owner):
    from kdbench.models.intermediate import SelfDistillingModel, _finished_modules, model_head

    _, _, owner_nets = owner
    net = owner_nets.DigitsNet()
    assert model_head(net) is net.fc  # its last linear layer stands in for the head
    assert [layer.name for layer in _finished_modules(net, (1, 8, 8))] == ["conv"]
    tapped = SelfDistillingModel(net, (1, 8, 8), 10)  # one stage: the auxiliary head reads what fc reads
    outputs = tapped(torch.zeros(2, 1, 8, 8))
    assert [tuple(o.shape) for o in outputs] == [(2, 10), (2, 10)]


def test_models_from_the_kdbench_models_entry_point_group(owner, monkeypatch):
    import importlib.metadata

    from kdbench.models import MODELS
    from kdbench.plugins import discovery

    point = importlib.metadata.EntryPoint("owners_net", "owner_nets:DigitsNet", "kdbench.models")
    monkeypatch.setattr(
        discovery.importlib.metadata,
        "entry_points",
        lambda group: [point] if group == "kdbench.models" else [],
    )
    try:
        discovery._load_models()
        assert type(create_model("owners_net", 10, (1, 8, 8))).__name__ == "DigitsNet"
        plan = plan_of("teacher=owners_net", *OWNED[1:])
        assert plan.teachers == ["owners_net"]
    finally:
        MODELS.unregister("owners_net")


def test_defense_file_needs_one_teacher_architecture(owner):
    folder, _, _ = owner
    with pytest.raises(ConfigError, match=r"defense 'file' loads one network: choose one teacher architecture"):
        plan_of("teacher=[digits_cnn,mlp]", "defense=file", f"defense.file.path={folder / 'a.pt'}", "attack=kd")


GUARD_PROBE = """
from kdbench.own_model import called_outside_a_main_guard as outside

def nested():
    return outside()

print("top", outside(), nested())
if __name__ == "__main__":
    print("guarded", outside(), nested())
"""


def test_a_call_outside_the_main_guard_of_a_script_is_told_from_one_inside(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(GUARD_PROBE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout.split("\n")[:2] == ["top True True", "guarded False False"], done.stderr


NET_MODULE = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes=10, input_shape=(1, 8, 8)):
        super().__init__()
        c, h, w = input_shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.body(x)
"""

UNGUARDED_SCRIPT = """
import torch
import kdbench
from mynet import Net

from kdbench.api import DatasetConfig, load_dataset

torch.manual_seed(0)
net = Net()
data = load_dataset(DatasetConfig(name="digits"))
x = (data.train.x.float() / data.pixel_max - 0.3) / 0.4
optimiser = torch.optim.Adam(net.parameters(), 1e-2)
for _ in range(100):
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(net(x), data.train.y).backward()
    optimiser.step()
table = kdbench.evaluate(
    net,
    attacks=["kd"],
    students=["mlp", "cnn1"],
    defenses=["normal", "topk"],
    normalize={"mean": [0.3], "std": [0.4]},
    results_dir="r",
    train__epochs=1,
)
print(sorted(table.status))
"""


def test_evaluate_from_a_plain_script_without_a_main_guard_works(tmp_path):
    """Its network importable, so worker processes could build it: they would re-run the script's
    top level while starting; the run stays in the script's process instead."""
    (tmp_path / "mynet.py").write_text(NET_MODULE)
    (tmp_path / "script.py").write_text(UNGUARDED_SCRIPT)
    done = subprocess.run([sys.executable, "script.py"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['ok', 'ok', 'ok', 'ok']"


@pytest.mark.slow
def test_the_readmes_evaluate_example_runs_as_a_plain_script(tmp_path):
    """The README's Python example, saved as a script as a user would (its network defined in the
    script, no main guard), runs and prints its table; what it does shows on standard error."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (example,) = [b for b in blocks if "kdbench.evaluate(" in b]
    assert "__main__" not in example
    (tmp_path / "example.py").write_text(example)
    done = subprocess.run([sys.executable, "example.py"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines()]
    assert table[0] == ["defense", "attack", "teacher_acc", "student_acc", "drop"]
    assert sorted(row[:2] for row in table[1:]) == [
        ["nasty", "blackbox"],
        ["nasty", "kd"],
        ["normal", "blackbox"],
        ["normal", "kd"],
    ]
    assert "kdbench: digits: ranking" in done.stderr and "Finding: " in done.stderr
    assert "my_digits (python/Sequential, weights sha256 " in " ".join(done.stderr.split())
    assert {"leaderboard.md", "records"} <= {p.name for p in (tmp_path / "results" / "runs" / "digits").iterdir()}
