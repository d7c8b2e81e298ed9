"""The uplink, the allocator and the bound through Python, against closed
forms computed here."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

import wflora

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_rate_is_the_fdma_closed_form_and_min_share_its_inverse() -> None:
    p, g, w, n0 = 0.2, 1e-11, 1e6, 3.981e-21
    link = wflora.Uplink(p, g, w, n0)
    for share in [0.01, 0.1, 0.5, 1.0]:
        want = share * w * math.log2(1 + p * g / (share * w * n0))
        assert link.rate_bps(share) == pytest.approx(want, rel=1e-12)
    assert link.rate_cap_bps() == pytest.approx(p * g / (n0 * math.log(2)), rel=1e-12)
    bits, t = 2e6, 1.5
    share = link.min_share(bits, t)
    assert share is not None
    assert link.airtime_s(bits, share) == pytest.approx(t, rel=1e-9)
    assert link.min_share(1e12, 1e-3) is None
    with pytest.raises(wflora.WfloraError, match="bandwidth_hz"):
        wflora.Uplink(p, g, 0.0, n0)


def test_equalising_split_finishes_everyone_together() -> None:
    net = wflora.Network(4, 42)
    links = [net.uplink(k, 0) for k in range(4)]
    t_cmp = [3.2e8 / f for f in net.cpu_freq_hz]
    bits = [8e6, 4e6, 2e6, 1e6]
    shares, finish = wflora.equalising_split(links, t_cmp, bits)
    assert sum(shares) == pytest.approx(1.0, abs=1e-12)
    for k in range(4):
        assert t_cmp[k] + links[k].airtime_s(bits[k], shares[k]) == pytest.approx(finish, rel=1e-9)


def test_the_allocator_solves_the_documented_example() -> None:
    instance = json.loads((REPO / "crates/alloc/examples/instance.json").read_text())
    sol = wflora.solve_allocation(instance)
    alloc = sol.get("allocation", sol)
    shares, comps, tau = alloc["shares"], alloc["components"], alloc["tau_s"]
    assert sum(shares) <= 1 + 1e-9
    w, n0 = instance["bandwidth_hz"], instance["noise_psd_w_per_hz"]
    for c, share, m in zip(instance["clients"], shares, comps):
        if m == 0:
            continue
        bits = next(lv["bits"] for lv in c["levels"] if lv["components"] == m)
        g = c["path_gain"] * c["fading"]
        rate = share * w * math.log2(1 + c["tx_power_w"] * g / (share * w * n0))
        assert c["compute_latency_s"] + bits / rate <= tau * (1 + 1e-9)
    bad = dict(instance, bandwidth_hz=-1.0)
    with pytest.raises(wflora.WfloraError, match="bandwidth_hz"):
        wflora.solve_allocation(bad)


def test_offline_rank_choice_matches_the_worked_example() -> None:
    # crates/bounds/examples/offline_rank.rs: at a 0.6 s budget ranks up to 8
    # fit uncompressed and r* = 8; rank 16 keeps 6 of 16 components.
    spectrum = [i ** -0.5 for i in range(1, 65)]
    sel = wflora.select_rank(
        spectrum,
        [2, 8, 32],
        [0.01, 0.04, 0.16],
        [1, 2, 4, 8, 16],
        0.6,
        lambda r, rho: 0.1 + 0.01 * r + 0.05 * rho * r,
    )
    assert (sel["rank"], sel["kept_components"]) == (8, 8)
    assert sel["latency_s"] == pytest.approx(0.1 + 0.08 + 0.4)

    def broken(r: int, rho: float) -> float:
        raise RuntimeError("latency model failed")

    with pytest.raises(RuntimeError, match="latency model failed"):
        wflora.select_rank(spectrum, [2, 8, 32], [0.01, 0.04, 0.16], [1, 2], 0.6, broken)
    with pytest.raises(wflora.WfloraError):
        wflora.select_rank(spectrum, [2, 8, 32], [0.01, 0.04, 0.16], [1, 2], 1e-6, lambda r, p: 1.0)
