"""`torch.ops.asymvalley.valley_asymmetry` against an independent numpy oracle.

Fields (float64): 0 rise_ratio, 1 log_rise_ratio, 2 flat_side, 3 class (0 flat, 1 sharp,
2 asymmetric), 4 radius, 5 rise_plus, 6 rise_minus, 7 fit_c_plus, 8 fit_c_minus,
9 fit_exponent, 10 center_loss (see src/valley/op.rs).
"""
import numpy as np
import pytest
import torch

import asymvalley  # noqa: F401  (loads the op library)

FLOOR = 1e-9


def oracle(t, loss):
    """R at the largest matched radius, and the shared-exponent log-log fit, in numpy."""
    t, loss = np.asarray(t, float), np.asarray(loss, float)
    i0 = int(np.argmin(np.abs(t)))
    r = t.max()
    ip, im = int(np.argmin(np.abs(t - r))), int(np.argmin(np.abs(t + r)))
    up, down = loss[ip] - loss[i0], loss[im] - loss[i0]
    ratio = max(up, FLOOR) / max(down, FLOOR)
    # ln Δ = ln c± + p ln|t|: two intercepts, one slope.
    rows, ys = [], []
    for tt, ll in zip(t, loss):
        rise = ll - loss[i0]
        if tt != 0 and rise > FLOOR:
            rows.append([1.0 if tt > 0 else 0.0, 1.0 if tt < 0 else 0.0, np.log(abs(tt))])
            ys.append(np.log(rise))
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    flat = 0
    if abs(np.log(ratio)) >= np.log(2.0):
        flat = 1 if ratio < 1 else -1
    return ratio, flat, np.exp(coef[0]), np.exp(coef[1]), coef[2], loss[i0], r, up, down


@pytest.mark.parametrize("a_plus,a_minus,p", [(1.0, 10.0, 2.0), (4.0, 1.0, 2.0), (2.0, 2.0, 2.0), (0.5, 3.0, 3.0)])
def test_valley_asymmetry_matches_numpy_oracle(a_plus, a_minus, p):
    t = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
    loss = 0.25 + torch.where(t >= 0, a_plus * t.abs() ** p, a_minus * t.abs() ** p)
    out = torch.ops.asymvalley.valley_asymmetry(t, loss)
    assert out.shape == (11,) and out.dtype == torch.float64
    ratio, flat, cp, cm, pe, l0, r, up, down = oracle(t.numpy(), loss.numpy())
    np.testing.assert_allclose(out[0].item(), ratio, rtol=1e-9)
    np.testing.assert_allclose(out[1].item(), np.log(ratio), rtol=1e-9, atol=1e-12)
    assert out[2].item() == flat
    expected_class = 2 if flat != 0 else (0 if max(up, down) <= 0.1 else 1)
    assert out[3].item() == expected_class
    np.testing.assert_allclose(out[4:7].numpy(), [r, up, down], rtol=1e-9)
    np.testing.assert_allclose(out[7:10].numpy(), [cp, cm, pe], rtol=1e-6)
    np.testing.assert_allclose(out[7:10].numpy(), [a_plus, a_minus, p], rtol=1e-6)
    assert out[10].item() == pytest.approx(l0)


def test_valley_asymmetry_batched_mirrored_and_float32():
    t = torch.linspace(-2.0, 2.0, 41)
    base = torch.where(t >= 0, 0.5 * t**2, 5.0 * t**2)
    batch = torch.stack([base, base.flip(0)])
    out = torch.ops.asymvalley.valley_asymmetry(t, batch)
    assert out.shape == (2, 11)
    assert out[0, 2].item() == 1 and out[1, 2].item() == -1
    assert out[0, 0].item() * out[1, 0].item() == pytest.approx(1.0)


def test_valley_asymmetry_errors_and_meta():
    t = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="last dimension"):
        torch.ops.asymvalley.valley_asymmetry(t, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="t = 0"):
        torch.ops.asymvalley.valley_asymmetry(torch.linspace(0.1, 1.0, 4), torch.ones(4))
    with pytest.raises(RuntimeError, match="not finite"):
        torch.ops.asymvalley.valley_asymmetry(t, torch.tensor([1.0, float("nan"), 0.0, 1.0, 2.0], dtype=torch.float64))
    meta = torch.ops.asymvalley.valley_asymmetry(t.to("meta"), torch.zeros(3, 5, device="meta"))
    assert meta.shape == (3, 11) and meta.dtype == torch.float64


@pytest.mark.parametrize(
    "offsets,needle",
    [
        ([-1.0, float("inf"), 0.0, 0.5, 1.0], "finite"),
        ([-1.0, float("nan"), 0.0, 0.5, 1.0], "finite"),
        ([-1.0, 0.0, 0.0, 0.5, 1.0], "strictly increasing"),
        ([1.0, 0.5, 0.0, -0.5, -1.0], "strictly increasing"),
    ],
)
def test_valley_asymmetry_refuses_bad_offsets(offsets, needle):
    t = torch.tensor(offsets, dtype=torch.float64)
    loss = torch.ones(5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="offsets") as e:
        torch.ops.asymvalley.valley_asymmetry(t, loss)
    assert needle in str(e.value)


def test_valley_asymmetry_refuses_empty_input():
    empty = torch.zeros(0, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="offsets.*empty"):
        torch.ops.asymvalley.valley_asymmetry(empty, empty)
