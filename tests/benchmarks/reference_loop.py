"""A KD epoch written the way the original Nasty-Teacher code does it, as the speed reference.

A torchvision ``Dataset`` over PIL images with per-image transforms, a ``DataLoader``, and fp32
throughout; the teacher runs under ``no_grad`` each batch. Same models, same data, same loss as
kdbench's loop, so the ratio of the two measures the loop alone.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from kdbench.data.images import ImageData


class PILDataset(Dataset):
    """Images kept as PIL images; every access applies the transform to one image."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        mode = "L" if images.shape[1] == 1 else "RGB"
        self.images = [Image.fromarray(img.transpose(1, 2, 0).squeeze(), mode=mode) for img in images]
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def reference_loader(data: ImageData, batch_size: int, num_workers: int) -> DataLoader:
    scale = data.pixel_max / 255.0  # digits store 0..16; ToTensor divides by 255
    ops: list = []
    if data.augment:
        ops += [transforms.RandomCrop(data.input_shape[1], padding=4), transforms.RandomHorizontalFlip()]
    mean = [m * scale for m in data.mean]
    std = [s * scale for s in data.std]
    ops += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    dataset = PILDataset(data.train.x.cpu().numpy(), data.train.y.cpu().numpy(), transforms.Compose(ops))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)


def reference_kd_epoch(
    student: nn.Module, teacher: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, tau: float = 4.0
) -> None:
    student.train()
    teacher.eval()
    for x, y in loader:
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = student(x)
        kd = F.kl_div(F.log_softmax(logits / tau, 1), F.softmax(teacher_logits / tau, 1), reduction="batchmean")
        loss = 0.9 * tau * tau * kd + 0.1 * F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
