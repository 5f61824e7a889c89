import stat
import threading
import time

import pytest
import torch

from kdbench.errors import BenchError
from kdbench.store.atomic import atomic_write_text
from kdbench.store.cache import ArtifactCache, CorruptArtifactError
from kdbench.store.keys import config_hash
from kdbench.training.loop import TrainingDiverged


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_round_trip_and_no_temporary_files_left(tmp_path):
    cache = ArtifactCache(tmp_path)
    state = torch.nn.Linear(3, 2).state_dict()
    cache.save("k", state, meta={"arch": "lin"})
    loaded = cache.load("k", "lin")
    assert all(torch.equal(loaded[n], state[n]) for n in state)
    assert [p.name for p in tmp_path.iterdir()] == ["k.pt"]
    assert cache.load("missing", "lin") is None


def test_a_checkpoint_copied_over_another_key_or_edited_is_refused_and_an_old_format_one_kept(tmp_path):
    cache = ArtifactCache(tmp_path)
    first, second = torch.nn.Linear(3, 2).state_dict(), torch.nn.Linear(3, 2).state_dict()
    cache.save("a", first, meta={"arch": "lin"})
    cache.save("b", second, meta={"arch": "lin"})
    cache.path("b").write_bytes(cache.path("a").read_bytes())
    with pytest.raises(CorruptArtifactError, match=r"b\.pt holds the network kdbench cached as a, not b"):
        cache.load("b", "lin")

    payload = torch.load(cache.path("a"), weights_only=True)
    payload["state_dict"]["bias"][0] += 1e-6  # one value, the metadata kept
    torch.save(payload, cache.path("a"))
    with pytest.raises(CorruptArtifactError, match="holds other weights than kdbench wrote"):
        cache.load("a", "lin")

    # written before checkpoints named their key and digest: loaded as before
    torch.save({"state_dict": first, "meta": {"arch": "lin"}}, cache.path("old"))
    assert torch.equal(cache.load("old", "lin")["weight"], first["weight"])


def test_the_tensors_digest_reads_values_names_and_dtypes():
    from kdbench.store.cache import tensors_digest

    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    assert tensors_digest(state) == tensors_digest({k: v.clone() for k, v in reversed(state.items())})
    assert tensors_digest(state) != tensors_digest({**state, "w": state["w"].reshape(3, 2)})
    assert tensors_digest(state) != tensors_digest({**state, "w": state["w"].double()})
    assert tensors_digest(state) != tensors_digest({"v": state["w"], "n": state["n"]})


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save("k", torch.nn.Linear(3, 2).state_dict(), meta={"arch": "lin"})
    with pytest.raises(CorruptArtifactError, match="holds a 'lin' network, not 'resnet18'"):
        cache.load("k", "resnet18")


def test_a_truncated_checkpoint_is_refused_with_a_clear_error(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save("k", torch.nn.Linear(3, 2).state_dict(), meta={"arch": "lin"})
    data = cache.path("k").read_bytes()
    cache.path("k").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtifactError, match=r"cannot be loaded safely.*delete it to retrain"):
        cache.load("k", "lin")


class _CreatesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickle_that_would_run_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    cache = ArtifactCache(tmp_path / "cache")
    cache.root.mkdir()
    with open(cache.path("evil"), "wb") as f:
        torch.save({"state_dict": {}, "meta": {"arch": "lin"}, "payload": _CreatesAFile(marker)}, f)
    marker.unlink(missing_ok=True)  # torch.save pickled it without calling it; make sure
    with pytest.raises(CorruptArtifactError, match="cannot be loaded safely"):
        cache.load("evil", "lin")
    assert not marker.exists()


def _linear(fill: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(fill)
        layer.bias.fill_(fill)
    return layer


def test_fill_trains_once_then_loads(tmp_path):
    cache = ArtifactCache(tmp_path)
    trained = _linear(0.0)
    cache.fill("k", trained, arch="lin", meta={"kind": "x"}, train=lambda: trained.weight.data.fill_(7.0))
    loaded = _linear(0.0)
    cache.fill("k", loaded, arch="lin", meta={"kind": "x"}, train=lambda: pytest.fail("trained twice"))
    assert torch.equal(loaded.weight, torch.full((2, 3), 7.0))


def test_a_second_builder_waits_for_the_first_and_loads_its_weights(tmp_path):
    cache = ArtifactCache(tmp_path)
    building, release = threading.Event(), threading.Event()
    trainings, notices = [], []
    first, second = _linear(0.0), _linear(0.0)

    def train_first():
        trainings.append("first")
        building.set()
        assert release.wait(30)
        first.weight.data.fill_(3.0)

    a = threading.Thread(target=cache.fill, args=("k", first), kwargs=dict(arch="lin", meta={}, train=train_first))
    a.start()
    assert building.wait(30)
    b = threading.Thread(
        target=cache.fill,
        args=("k", second),
        kwargs=dict(arch="lin", meta={}, train=lambda: trainings.append("second"), on_wait=notices.append),
    )
    b.start()
    deadline = time.monotonic() + 30
    while not notices and time.monotonic() < deadline:
        time.sleep(0.01)
    assert notices == [f"waiting for another process to finish building {cache.path('k')}"]
    assert b.is_alive()  # blocked on the lock while the first one trains
    release.set()
    a.join(30)
    b.join(30)
    assert trainings == ["first"]
    assert torch.equal(second.weight, torch.full((2, 3), 3.0))


def test_a_failed_build_caches_nothing_and_releases_the_lock(tmp_path):
    cache = ArtifactCache(tmp_path)

    def diverge():
        raise TrainingDiverged("loss nan")

    with pytest.raises(TrainingDiverged):
        cache.fill("k", _linear(0.0), arch="lin", meta={}, train=diverge)
    assert not cache.path("k").exists()
    with cache.lock("k", on_wait=lambda message: pytest.fail(message)):  # free again at once
        pass


def test_half_written_copies_left_by_a_killed_run_are_removed_by_the_next_build(tmp_path):
    cache = ArtifactCache(tmp_path)
    stray = tmp_path / ".k.pt.abc123.tmp"
    stray.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.abc123.tmp"
    other.write_bytes(b"another artifact's")
    cache.fill("k", _linear(0.0), arch="lin", meta={}, train=lambda: None)
    assert not stray.exists() and other.exists()


def test_written_files_get_the_permissions_of_an_ordinary_open(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    with open(tmp_path / "b.json", "w") as f:
        f.write("{}")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE((tmp_path / "b.json").stat().st_mode)


def test_a_filesystem_without_flock_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    import kdbench.store.cache

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(kdbench.store.cache.fcntl, "flock", no_flock)
    cache = ArtifactCache(tmp_path)
    with pytest.raises(BenchError, match=r"cannot lock .*k\.pt\.lock \(No locks available\); set cache_dir="):
        cache.fill("k", _linear(0.0), arch="lin", meta={}, train=lambda: pytest.fail("trained without the lock"))
