"""What NATS holds for an evaluation that never ended: the evidence a lost finding needs.

For each evaluation still QUEUED or RUNNING when the campaign ends, the job on its subject (if
any) and where that job stands against its priority's consumer: waiting, delivered and not yet
acknowledged, or below the consumer's acknowledgement floor, which the consumer will never
deliver again. Read-only: stream and consumer info and one message lookup per subject.
"""

from __future__ import annotations

import logging

import nats
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from evalmesh_common.subjects import (
    DEAD_LETTER_STREAM,
    JOB_ADVISORIES_STREAM,
    JOBS_STREAM,
    PRIORITY_NAMES,
    job_consumer,
    job_message_subject,
)

__all__ = ["dead_letter_trail", "job_whereabouts"]

log = logging.getLogger(__name__)


async def job_whereabouts(nats_url: str, evaluation_ids: list[str]) -> dict[str, str]:
    """evaluation id -> a sentence on where its job is."""
    found: dict[str, str] = {}
    if not evaluation_ids:
        return found
    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = client.jetstream()
        consumers = {
            p: await js.consumer_info(JOBS_STREAM, job_consumer(p)) for p in PRIORITY_NAMES
        }
        for evaluation_id in evaluation_ids:
            found[evaluation_id] = await _where(js, consumers, evaluation_id)
    except Exception as error:  # evidence is a bonus; the finding stands without it
        log.warning("could not read NATS for evidence: %s", error)
    finally:
        await client.close()
    return found


async def _where(
    js: JetStreamContext, consumers: dict[str, ConsumerInfo], evaluation_id: str
) -> str:
    for priority in PRIORITY_NAMES:
        subject = job_message_subject(priority, evaluation_id)
        try:
            message = await js.get_last_msg(JOBS_STREAM, subject)
        except NotFoundError:
            continue
        info = consumers[priority]
        seq = message.seq or 0
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        delivered = info.delivered.stream_seq if info.delivered else 0
        where = (
            f"consumer {info.name} has delivered up to {delivered}, acknowledged everything up "
            f"to {floor}, {info.num_ack_pending} unacknowledged, {info.num_pending} waiting"
        )
        state = "never to be delivered again" if seq <= floor else "still deliverable"
        if seq > floor and seq <= delivered and not info.num_ack_pending:
            state = "delivered, neither pending nor acknowledged: never to be delivered again"
        msg_id = (message.headers or {}).get("Nats-Msg-Id", "")
        job = f"its job is in {JOBS_STREAM} at sequence {seq} (Nats-Msg-Id {msg_id})"
        return f"{job}; {where}: {state}"
    return f"no job for it in {JOBS_STREAM}"


async def dead_letter_trail(nats_url: str) -> str:
    """What the dead-letter path holds: the max-deliveries advisories JetStream stored (ever:
    the stream's last sequence) and the dead letters written."""
    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = client.jetstream()
        advisories = await js.stream_info(JOB_ADVISORIES_STREAM)
        letters = await js.stream_info(DEAD_LETTER_STREAM)
    except Exception as error:
        return f"could not read the dead-letter streams: {error}"
    finally:
        await client.close()
    return (
        f"{JOB_ADVISORIES_STREAM} has stored {advisories.state.last_seq} max-deliveries "
        f"advisories in all; {DEAD_LETTER_STREAM} holds {letters.state.messages} dead letters"
    )
