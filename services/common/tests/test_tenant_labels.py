"""Per-tenant metric labels stay bounded: heavy tenants get their name, the rest "other"."""

from __future__ import annotations

import pytest

from evalmesh_common.server.tenant_labels import OTHER, TenantLabels


def test_the_first_tenants_are_labelled_while_few_are_seen() -> None:
    labels = TenantLabels(min_share=0.1, limit=5, capacity=10)
    assert [labels.label(t) for t in ("a", "b", "c")] == ["a", "b", "c"]


def test_a_flood_of_one_off_tenants_never_grows_the_label_set_past_its_limit() -> None:
    labels = TenantLabels(min_share=0.1, limit=5, capacity=20)
    seen = {labels.label(f"tenant-{n}") for n in range(10_000)}
    assert len(seen - {OTHER}) <= 5
    assert OTHER in seen


def test_a_heavy_tenant_gets_its_own_label_among_many_light_ones_and_keeps_it() -> None:
    labels = TenantLabels(min_share=0.05, limit=40, capacity=50)
    for n in range(500):  # many light tenants fill the limit's early places and the sketch
        labels.label(f"light-{n}")
    results = []
    for _ in range(200):
        results.append(labels.label("heavy"))
        labels.label(f"light-x-{len(results)}")
    assert results[-1] == "heavy"
    first = results.index("heavy")
    assert all(result == "heavy" for result in results[first:])  # sticky: counters stay monotonic
    assert "heavy" in labels.labelled
    assert len(labels.labelled) <= 1 + 20  # the early ones (share >= 5 %) and the heavy one
    assert all(labels.label(f"light-{n}") == OTHER for n in range(100, 110))


def test_a_tenant_called_other_is_counted_as_other() -> None:
    labels = TenantLabels(min_share=0.5, limit=1, capacity=2)
    assert labels.label(OTHER) == OTHER
    assert labels.labelled == frozenset()


def test_inconsistent_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        TenantLabels(limit=300, capacity=200)
    with pytest.raises(ValueError, match="min_share"):
        TenantLabels(min_share=0)
