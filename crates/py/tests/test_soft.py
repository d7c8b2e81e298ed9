"""SOFT and the baselines through Python, against numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import wflora


def factors(seed: int, d: int = 6, l: int = 5, r: int = 4):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((d, r)).astype(np.float32)
    a = rng.standard_normal((r, l)).astype(np.float32)
    db = (0.1 * rng.standard_normal((d, r))).astype(np.float32)
    da = (0.1 * rng.standard_normal((r, l))).astype(np.float32)
    return b, a, db, da


def test_soft_keeps_the_top_components_by_the_norm_product() -> None:
    b, a, db, da = factors(1)
    m = 2
    msg, res = wflora.compress("soft", b, a, db, da, m=m)
    # Independent: s_i = ||b_i + db_i|| * ||a_i + da_i||, keep the top m.
    s = np.linalg.norm(b + db, axis=0) * np.linalg.norm(a + da, axis=1)
    keep = np.sort(np.argsort(-s.astype(np.float64))[:m])
    ub, ua = msg.decode()
    want_b = np.zeros_like(db)
    want_a = np.zeros_like(da)
    want_b[:, keep] = db[:, keep]
    want_a[keep, :] = da[keep, :]
    np.testing.assert_array_equal(ub, want_b)
    np.testing.assert_array_equal(ua, want_a)
    # What was not sent waits in the residual: decode + residual = update.
    rb, ra = res.arrays()
    np.testing.assert_array_equal(ub + rb, db)
    np.testing.assert_array_equal(ua + ra, da)
    d, l, r = msg.dims
    assert (d, l, r) == (6, 5, 4)
    assert msg.bits == m * (d + l) * 32 + m * math.ceil(math.log2(r))
    assert msg.bits == sum(x if i == 1 else 32 * x for i, x in enumerate(wflora.budget(d, l, r, m)))
    np.testing.assert_allclose(wflora.importances(b, a, db, da), s, rtol=1e-6)


def test_aggregate_is_the_weighted_factor_wise_sum() -> None:
    b, a, *_ = factors(2)
    msgs = []
    want_b, want_a = b.astype(np.float64), a.astype(np.float64)
    for k, p in enumerate([0.25, 0.75]):
        _, _, db, da = factors(10 + k)
        msg, _ = wflora.compress("ilora", b, a, db, da, m=4)
        msgs.append((p, msg))
        want_b = want_b + p * db
        want_a = want_a + p * da
    nb, na = wflora.aggregate(b, a, msgs)
    np.testing.assert_allclose(nb, want_b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(na, want_a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["soft", "soft_delta", "slora", "tlora", "rlora", "ilora"])
def test_every_method_fits_the_budget_of_m(method: str) -> None:
    b, a, db, da = factors(3, d=12, l=10, r=8)
    for m in range(1, 9):
        msg, res = wflora.compress(method, b, a, db, da, m=m, seed=7)
        values, index_bits = wflora.budget(12, 10, 8, m)
        if method == "ilora":  # the uncompressed upper line: everything, no indices
            assert msg.bits == 8 * (12 + 10) * 32
        else:
            assert msg.bits <= 32 * values + index_bits
        assert msg.method == method
        assert res.kind == ("dense" if method == "slora" else "factors")


def test_error_feedback_carries_the_residual() -> None:
    b, a, db, da = factors(4)
    _, res = wflora.compress("soft", b, a, db, da, m=1)
    msg2, res2 = wflora.compress("soft", b, a, db, da, m=4, residual=res)
    ub, ua = msg2.decode()
    rb, ra = res.arrays()
    np.testing.assert_allclose(ub, db + rb, rtol=1e-6)
    np.testing.assert_allclose(ua, da + ra, rtol=1e-6)
    _, none = wflora.compress("soft", b, a, db, da, m=1, error_feedback=False)
    assert none.kind == "zero"


def test_ratios_become_counts_exactly() -> None:
    assert wflora.components_for_ratio(0.3, 10) == 3
    assert wflora.components_for_ratio(0.25, 8) == 2
    assert wflora.components_for_ratio(1 / 3, 8) == 3
    assert all(wflora.components_for_ratio(m / 16, 16) == m for m in range(1, 17))


def test_bad_input_raises_the_cli_message() -> None:
    b, a, db, da = factors(5)
    with pytest.raises(wflora.WfloraError, match="kept components m = 0"):
        wflora.compress("soft", b, a, db, da, m=0)
    with pytest.raises(wflora.WfloraError, match="unknown method 'svd'"):
        wflora.compress("svd", b, a, db, da, m=1)
    with pytest.raises(wflora.WfloraError):
        wflora.compress("soft", b, a, db[:3], da, m=1)
    with pytest.raises(wflora.WfloraError):
        wflora.components_for_ratio(1.5, 8)
    with pytest.raises(ValueError):  # WfloraError is a ValueError
        wflora.budget(4, 4, 4, 9)
    nan = db.copy()
    nan[0, 0] = np.nan
    with pytest.raises(wflora.WfloraError):
        wflora.compress("soft", b, a, nan, da, m=1)
