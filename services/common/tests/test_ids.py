"""Evaluation and API key ids."""

from __future__ import annotations

from evalmesh_common.ids import is_evaluation_id, new_evaluation_id, ulid


def test_evaluation_ids_sort_in_creation_order_and_never_repeat() -> None:
    ids = [new_evaluation_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("ev_") and len(i) == 29 for i in ids)
    assert ulid(1_000) < ulid(2_000_000_000_000)


def test_only_what_new_evaluation_id_makes_counts_as_an_evaluation_id() -> None:
    assert is_evaluation_id(new_evaluation_id())
    made = new_evaluation_id()
    for other in ("", made[3:], "key_" + made[3:], made + "0", made[:-1] + "U", made.lower()):
        assert not is_evaluation_id(other), other
