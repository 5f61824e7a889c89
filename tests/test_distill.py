import torch

from kdbench.data.catalogue import load_dataset
from kdbench.data.images import DatasetConfig
from kdbench.serving.answers import answered_batches
from kdbench.serving.teacher import Access, Teacher


class CountingTeacher:
    def __init__(self, num_classes: int) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))
        self.asked = 0

    def __call__(self, x):
        self.asked += x.shape[0]
        return self.net(x)


def test_unaugmented_inputs_are_asked_once_and_every_batch_carries_its_own_answers():
    data = load_dataset(DatasetConfig(name="digits"))
    teacher = CountingTeacher(10)
    batches, steps = answered_batches(data, teacher, 64, torch.Generator().manual_seed(0))
    assert steps == 23  # ceil(1437 / 64)
    seen = 0
    for epoch in range(3):
        for x, batch in batches(epoch):
            with torch.no_grad():
                assert torch.allclose(batch.teacher, teacher.net(x), atol=1e-5)
            assert batch.labels.shape[0] == x.shape[0]
            seen += x.shape[0]
    assert seen == 3 * 1437
    assert teacher.asked == 1437


def test_augmented_inputs_are_asked_once_per_epoch_about_that_epochs_view():
    data = load_dataset(DatasetConfig(name="synthetic", shape=[3, 8, 8], train_size=100, augment=True))
    teacher = CountingTeacher(10)
    batches, _ = answered_batches(data, teacher, 32, torch.Generator().manual_seed(0))
    for epoch in range(2):
        for x, batch in batches(epoch):
            with torch.no_grad():
                assert torch.allclose(batch.teacher, teacher.net(x), atol=1e-5)
            assert teacher.asked == (epoch + 1) * 100  # the whole view before its first batch
    assert teacher.asked == 2 * 100


def epoch_inputs(data, generator_seed: int, seed: int | None, epoch: int) -> torch.Tensor:
    batches, _ = answered_batches(
        data, CountingTeacher(10), 32, torch.Generator().manual_seed(generator_seed), seed=seed
    )
    return torch.cat([x for x, _ in batches(epoch)])


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    rows = x.flatten(1)
    for column in reversed(range(rows.shape[1])):
        rows = rows[rows[:, column].argsort(stable=True)]
    return rows


def test_with_a_seed_every_caller_is_asked_about_the_same_views_in_its_own_order():
    data = load_dataset(DatasetConfig(name="synthetic", shape=[3, 8, 8], train_size=100, augment=True))
    one, other = epoch_inputs(data, 1, 7, epoch=0), epoch_inputs(data, 2, 7, epoch=0)
    assert not torch.equal(one, other)  # each attack shuffles with its own generator...
    assert torch.equal(sorted_rows(one), sorted_rows(other))  # ...through the same augmented images
    assert not torch.equal(sorted_rows(one), sorted_rows(epoch_inputs(data, 1, 7, epoch=1)))  # a view per epoch
    assert not torch.equal(sorted_rows(one), sorted_rows(epoch_inputs(data, 1, 8, epoch=0)))  # and per seed
    # without a seed the attack's own generator draws its views
    assert not torch.equal(sorted_rows(epoch_inputs(data, 1, None, 0)), sorted_rows(epoch_inputs(data, 2, None, 0)))


def test_an_api_counts_one_query_per_training_input_without_augmentation():
    data = load_dataset(DatasetConfig(name="digits"))
    api = Teacher(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))).api(Access.LOGITS)
    batches, _ = answered_batches(data, api, 64, torch.Generator().manual_seed(0))
    for epoch in range(5):
        for _ in batches(epoch):
            pass
    assert api.queries == len(data.train)
