"""The suite's own defenses; importing this package registers them."""

from kdbench.defenses import (  # noqa: F401
    adaptive_misinformation,
    file,
    logit_noise,
    mad,
    nasty,
    normal,
    reverse_sigmoid,
    rounding,
    topk,
)
