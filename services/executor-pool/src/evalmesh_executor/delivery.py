"""One JetStream delivery of a job: its decoding, its delivery count, and its ack, nak and touch.

Acks, naks and touches are best effort: one that fails is logged, and what it meant happens
anyway (ack_wait redelivers, a redelivery of a finished evaluation is dropped).
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from evalmesh.scheduler.v1 import job_pb2

__all__ = ["ack", "deliveries", "nak", "parse_job", "touch"]

logger = logging.getLogger(__name__)


def parse_job(data: bytes) -> job_pb2.Job:
    """The job a message carries (DecodeError when it is not one)."""
    job = job_pb2.Job.FromString(data)
    if not job.evaluation_id:
        raise DecodeError("the job names no evaluation")
    return job


def deliveries(msg: Msg) -> int:
    """How many times JetStream has delivered ``msg`` (1 for a plain message)."""
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # not a JetStream delivery (no metadata in its reply subject)
        return 1


async def ack(msg: Msg) -> None:
    """Acknowledge ``msg``."""
    try:
        await msg.ack()
    except Exception as exc:  # redelivery finds the evaluation terminal and drops it
        logger.warning("ack failed: %s", exc)


async def nak(msg: Msg, delay: float) -> None:
    """Ask for ``msg`` again after ``delay`` seconds (at once when 0); spends a delivery."""
    try:
        await msg.nak(delay=delay if delay > 0 else None)
    except Exception as exc:  # ack_wait redelivers it anyway
        logger.warning("nak failed: %s", exc)


async def touch(msg: Msg, patience: float) -> None:
    """Tell JetStream ``msg`` is still being worked on, giving up after ``patience`` seconds."""
    try:
        async with asyncio.timeout(patience):
            await msg.in_progress()
    except Exception as exc:  # NATS away: ack_wait may then redeliver it
        logger.warning("in_progress failed: %r", exc)
