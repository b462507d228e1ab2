"""Honest scoring in `torch.ops.asymvalley.valley_asymmetry`: the op follows the detector's rules
(scores around the profile's minimum, a slope class, refuses bad offsets). Expected values are
closed forms of the profiles below, not the op's own output.
"""
import pytest
import torch

import asymvalley  # noqa: F401  (loads the op library)


def test_off_centre_symmetric_minimum_is_not_asymmetric():
    # 2 (t - 0.3)^2 on [-1, 1]: around t_min = 0.3 the largest matched radius is 0.7,
    # both rises are 2 * 0.49 and R = 1.
    t = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
    out = torch.ops.asymvalley.valley_asymmetry(t, 1.0 + 2.0 * (t - 0.3) ** 2)
    assert out[0].item() == pytest.approx(1.0, rel=1e-6)
    assert out[2].item() == 0 and out[3].item() == 1  # flat_side 0, sharp
    assert out[4].item() == pytest.approx(0.7, rel=1e-6)
    assert out[5].item() == pytest.approx(0.98, rel=1e-6) and out[6].item() == pytest.approx(0.98, rel=1e-6)


def test_monotone_profile_is_a_slope():
    t = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
    out = torch.ops.asymvalley.valley_asymmetry(t, 1.0 - 0.5 * t)
    assert out[3].item() == 3 and out[2].item() == 0


@pytest.mark.parametrize(
    "t",
    [[-1.0, 0.0, float("nan")], [-1.0, 0.0, 0.0], [1.0, 0.0, -1.0]],
    ids=["non-finite", "duplicate", "unsorted"],
)
def test_bad_offsets_are_refused(t):
    with pytest.raises(RuntimeError, match="offset"):
        torch.ops.asymvalley.valley_asymmetry(torch.tensor(t, dtype=torch.float64), torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64))
