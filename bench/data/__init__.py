"""Datasets as uint8 tensors on the run's device: the catalogue of loaders, array datasets (digits,
CIFAR, synthetic) and image folders."""
