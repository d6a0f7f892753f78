"""The evalmesh chaos campaign: ``scripts/chaos`` (``python -m chaos``).

A steady load of self-identifying evaluations runs through a real local mesh while each
component in turn is killed and restarted, paused past its lease, starved of disk or cut off
from NATS. A checker then compares what was submitted with what storage holds, what the
programs printed and what ran on the host, and counts lost, duplicated, phantom, wrong, ERROR,
stuck and orphaned work. The report goes to ``docs/reliability.md``.
"""
