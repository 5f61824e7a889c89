"""The suite's own defenses; importing this package registers them."""

from kdbench.defenses import file, logit_noise, nasty, normal, reverse_sigmoid, rounding, topk  # noqa: F401
