"""No attack diverges because of the format a defense serves: every attack × every logit-perturbation
defense on the tiny preset gives ``ok``. The Stingy Teacher serves −∞ logits (on the tiny preset's 4
classes it keeps k = 1), reverse sigmoid serves log ŷ with −∞ where ŷ = 0; an attacker works with
what is finite (:func:`kdbench.training.losses.finite_logits`)."""

import pandas as pd

from kdbench.cli import main

LOGIT_DEFENSES = ["logit_noise", "topk", "reverse_sigmoid"]
ATTACKS = ["kd", "blackbox", "htc", "skeptical", "dafl", "deepinversion", "fast_dfkd", "dfme"]


def test_every_attack_meets_every_logit_defense_without_diverging(tmp_path):
    selection = [
        f"defense=[{','.join(LOGIT_DEFENSES)}]",
        f"attack=[{','.join(ATTACKS)}]",
        "+attack_variants.blackbox_logits={base: blackbox, access: logits}",  # black box with logits access
        "train.epochs=2",  # the skeptical student distils in its second epoch (kd_delay = round(2/4) = 0)
    ]
    assert main(["run", "all", "preset=tiny", *selection, "quiet=true", f"results_dir={tmp_path}"]) == 0
    records = pd.read_csv(tmp_path / "synthetic" / "records.csv")
    assert set(records.attack) == {*ATTACKS, "blackbox_logits"} and set(records.defense) == set(LOGIT_DEFENSES)
    assert len(records) == 3 * 9
    bad = records[records.status != "ok"][["defense", "attack", "status", "reason"]]
    assert bad.empty, bad.to_string()


def test_finite_logits_floors_minus_infinity_below_the_rows_smallest_finite_logit():
    import math

    import torch

    from kdbench.training.losses import MASKED_GAP, finite_logits, soft_kl

    served = torch.tensor([[1.0, -math.inf, 3.0], [0.5, 2.0, -1.0]], requires_grad=True)
    out = finite_logits(served)
    assert out.tolist() == [[1.0, 1.0 - MASKED_GAP, 3.0], [0.5, 2.0, -1.0]]
    # a cross-entropy on the masked class is finite (about 1e4), with finite gradients on the kept ones
    loss = torch.nn.functional.cross_entropy(out, torch.tensor([1, 0]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(served.grad).all() and served.grad[0, 1] == 0
    # distillation targets are unchanged: the masked class still gets probability 0 at τ = 4 and 70
    for tau in (4.0, 70.0):
        assert torch.softmax(out.detach() / tau, 1)[0, 1].item() == 0.0
        assert soft_kl(out.detach(), served.detach().nan_to_num(neginf=0.0), tau).isfinite()
    labels = torch.tensor([2, 0])
    assert finite_logits(labels) is labels
