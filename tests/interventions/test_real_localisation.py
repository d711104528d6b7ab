"""What localisation finds on SmolLM2, checked as properties rather than hard-coded layers."""

from __future__ import annotations

import pytest
import torch

import mechscope
from mechscope.interventions import SweepConfig, sweep
from mechscope.interventions.attribution import attribution_patching
from mechscope.pipeline.localise import _tracing_subset, correlation
from mechscope.tasks import make_task, prepare

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm():
    return mechscope.load_model("smollm2-135m", device="cpu")


def test_causal_tracing_shape(smollm):
    """Meng et al.: restoring the subject's last token matters in the early and middle layers,
    the final position in the late layers, and one hands over to the other at the same depth."""
    data = prepare(smollm, _tracing_subset(smollm, 8))
    subject = int(data.positions["subject_last"][0])
    result = sweep(smollm, data, "resid_pre", config=SweepConfig(positions=(subject, -1)))
    norm = result.normalized()  # [layer, (subject_last, end)]
    subj, end = norm[:, 0], norm[:, 1]
    assert subj.max() > 0.2 and end.max() > 0.5
    half, sixth = smollm.cfg.n_layers // 2, smollm.cfg.n_layers // 6
    assert subj[:half].mean() > end[:half].mean() + 0.15  # early: the subject carries the fact
    assert end[-sixth:].mean() > subj[-sixth:].mean() + 0.5  # late: the final position does
    peak = int(subj.argmax())
    subject_fades = peak + int((subj[peak:] < 0.5 * subj.max()).nonzero()[0])
    end_rises = int((end > 0.5 * end.max()).nonzero()[0])
    assert abs(subject_fades - end_rises) <= 2


def test_attribution_tracks_exact_patching_on_ioi(smollm):
    data = prepare(smollm, make_task("ioi", smollm, n=4))
    config = SweepConfig(layers=tuple(range(20, 30)))
    exact = sweep(smollm, data, "heads", config=config)
    atp = attribution_patching(smollm, data, "heads", config=config)
    assert correlation(exact, atp) > 0.9
    assert exact.top(1)[0][0] == atp.top(1)[0][0]  # the same most important head
    exact_k = sweep(smollm, data, "k", config=config)
    star = attribution_patching(smollm, data, "k", qk_fix=True, config=config)
    plain = attribution_patching(smollm, data, "k", config=config)
    assert correlation(exact_k, star) > correlation(exact_k, plain)
    assert torch.isfinite(star.values).all()
