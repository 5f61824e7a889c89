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


def test_augmented_inputs_are_asked_batch_by_batch():
    data = load_dataset(DatasetConfig(name="synthetic", shape=[3, 8, 8], train_size=100, augment=True))
    teacher = CountingTeacher(10)
    batches, _ = answered_batches(data, teacher, 32, torch.Generator().manual_seed(0))
    for epoch in range(2):
        for x, batch in batches(epoch):
            with torch.no_grad():
                assert torch.allclose(batch.teacher, teacher.net(x), atol=1e-5)
    assert teacher.asked == 2 * 100


def test_an_api_counts_one_query_per_training_input_without_augmentation():
    data = load_dataset(DatasetConfig(name="digits"))
    api = Teacher(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))).api(Access.LOGITS)
    batches, _ = answered_batches(data, api, 64, torch.Generator().manual_seed(0))
    for epoch in range(5):
        for _ in batches(epoch):
            pass
    assert api.queries == len(data.train)
