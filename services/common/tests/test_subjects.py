"""Subject names: a job's priority class read back from its subject."""

from __future__ import annotations

from evalmesh_common.subjects import PRIORITY_NAMES, job_message_subject, job_priority


def test_a_job_subject_gives_back_its_priority_class_and_nothing_else_does() -> None:
    for priority in PRIORITY_NAMES:
        assert job_priority(job_message_subject(priority, "ev_1")) == priority
    for other in ("evalmesh.jobs.urgent.ev_1", "evalmesh.jobs.high", "evalmesh.events.high.x", ""):
        assert job_priority(other) is None, other
