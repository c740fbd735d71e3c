"""The compute model of an iteration (tafs.train.cost) on the paper's Table 2 step counts, by hand."""

import pytest

from tafs.train import cost


@pytest.mark.parametrize("old,theta,units", [(4, 3, 13), (10, 6, 28), (25, 14, 67), (25, 4, 37)])
def test_units_are_forwards_plus_three_per_trained_action(old, theta, units):
    assert cost.iteration_units({"nfe_old": old, "nfe_theta": theta}) == units


def test_paper_ratios():
    tafs = {"nfe_old": 4, "nfe_theta": 3}
    got = [cost.predicted_ratio({"nfe_old": o, "nfe_theta": t}, tafs) for o, t in [(10, 6), (25, 14), (25, 4)]]
    assert got == pytest.approx([28 / 13, 67 / 13, 37 / 13])
    assert [round(g, 2) for g in got] == [2.15, 5.15, 2.85]


def test_a_kl_term_adds_one_reference_forward_per_trained_action():
    flow = {"nfe_old": 10, "nfe_theta": 6}
    flow["nfe_ref"] = cost.reference_passes(flow, beta=0.01)
    assert flow["nfe_ref"] == 6 and cost.iteration_units(flow) == 34
    assert cost.reference_passes(flow, beta=0.0) == 0
