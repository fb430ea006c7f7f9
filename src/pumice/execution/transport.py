"""Durable queues as message transports: task-queue's file queue (``fq://``) and Amazon SQS (``sqs://``).

A thin layer over python-task-queue's queue APIs, giving the runner what it needs beyond them:
how many times a message was leased (to dead-letter a task that keeps killing its worker), a
small pointer naming the job a queue serves, and a lock for the hand-over between stages.

- ``fq:///path``: task-queue's FileQueueAPI on a shared filesystem. Exact counts; leases count
  in ``pumice/attempts/``; the pointer is ``pumice/job.json``; the lock is an fcntl lock.
- ``sqs://name``: task-queue's AWSTaskQueueAPI on SQS (created when first used). Leases count by
  SQS's own ApproximateReceiveCount; the pointer lives in the queue's tags; counts are SQS's
  approximate ones. Endpoints follow boto3's standard ``AWS_ENDPOINT_URL(_SQS)`` variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import PumiceError

INSERT_CHUNK = 100  # messages handed to task-queue at once: bounded memory however long the plan


@dataclass
class Message:
    body: dict[str, Any]
    handle: str  # what renews, releases and deletes it
    attempts: int  # leases so far, this one included


def is_queue_url(url: str) -> bool:
    return url.startswith(("fq://", "sqs://"))


def open_queue(url: str, *, create: bool = False) -> "FileQueue | SqsQueue":
    if url.startswith("fq://"):
        return FileQueue(url, create=create)
    if url.startswith("sqs://"):
        return SqsQueue(url, create=create)
    raise PumiceError(f"{url!r} is not a queue URL; use fq:///shared/path (a shared filesystem) or sqs://queue-name")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class FileQueue:
    exact = True  # counts are exact, so an empty queue means every message was deleted

    def __init__(self, url: str, *, create: bool = False):
        from taskqueue.file_queue_api import FileQueueAPI

        self.url = url
        self.path = Path(url[len("fq://"):]).expanduser().resolve()
        if not create and not (self.path / "queue").is_dir():
            raise PumiceError(f"no queue at {url}: enqueue a job there first (any operation with --queue {url})")
        self.api = FileQueueAPI(str(self.path))
        self.own = self.path / "pumice"
        (self.own / "attempts").mkdir(parents=True, exist_ok=True)

    def insert(self, bodies: Iterable[dict[str, Any]]) -> int:
        total = 0
        for chunk in _chunks(bodies, INSERT_CHUNK):
            total += self.api.insert(chunk)
            self.api.add_insert_count(len(chunk))  # task-queue's own `ptq status` counts stay right
        return total

    def lease(self, seconds: float) -> Message | None:
        leased = self.api.lease(max(1, int(round(seconds))), 1)
        if not leased:
            return None
        body = leased[0]
        handle = body.pop("id")
        with open(self.own / "attempts" / handle, "ab") as f:  # one byte per lease
            f.write(b"\0")
            attempts = f.tell()
        return Message(body, handle, attempts)

    def renew(self, message: Message, seconds: float) -> None:
        self.api.renew_lease(message.handle, max(1, int(round(seconds))))

    def release(self, message: Message, delay: float = 0) -> None:
        """Make it leasable again (after ``delay`` seconds)."""
        self.api.renew_lease(message.handle, int(round(delay)))

    def delete(self, message: Message) -> None:
        self.api.delete(message.handle)
        self.api.tally()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.own / "attempts" / message.handle)

    def counts(self) -> tuple[int, int]:
        """(waiting, leased) messages."""
        now = int(time.time())
        waiting = leased = 0
        for entry in os.scandir(self.api.queue_path):
            if int(entry.name.split("--")[0]) > now:
                leased += 1
            else:
                waiting += 1
        return waiting, leased

    def empty(self) -> bool:
        return self.api.is_empty()

    def release_all(self) -> None:
        self.api.release_all()

    def purge(self) -> None:
        self.api.purge()
        for entry in os.scandir(self.own / "attempts"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)

    def pointer(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.own / "job.json").read_text())
        except FileNotFoundError:
            return None

    def set_pointer(self, pointer: dict[str, Any]) -> None:
        temporary = self.own / f"job.json.{os.getpid()}"
        temporary.write_text(json.dumps(pointer) + "\n")
        os.replace(temporary, self.own / "job.json")  # readers see the old pointer or the new, never half

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        import fcntl

        with open(self.own / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


class SqsQueue:
    exact = False  # SQS's counts are approximate: an empty-looking queue is confirmed with the ledger

    POINTER_TAG = "pumice-job"

    def __init__(self, url: str, *, create: bool = False):
        import boto3
        import botocore.exceptions
        from taskqueue.aws_queue_api import AWSTaskQueueAPI
        from taskqueue.secrets import AWS_DEFAULT_REGION

        self.url = url
        self.name = url[len("sqs://"):].strip("/")
        if not self.name:
            raise PumiceError("sqs:// needs a queue name, e.g. sqs://pumice-jobs")
        region = os.environ.get("AWS_REGION", AWS_DEFAULT_REGION)
        try:
            client = boto3.client("sqs", region_name=region)
            try:
                client.get_queue_url(QueueName=self.name)
            except client.exceptions.QueueDoesNotExist:
                if not create:
                    raise PumiceError(f"no SQS queue named {self.name}: enqueue a job there first (--queue {url})") from None
                client.create_queue(QueueName=self.name)
            self.api = AWSTaskQueueAPI(self.name, region_name=region)
        except botocore.exceptions.BotoCoreError as e:
            raise PumiceError(f"cannot reach SQS for {url}: {e} (check AWS credentials, AWS_REGION and AWS_ENDPOINT_URL)") from None
        self.sqs = self.api.sqs

    def insert(self, bodies: Iterable[dict[str, Any]]) -> int:
        total = 0
        for chunk in _chunks(bodies, INSERT_CHUNK):
            total += self.api.insert(chunk)
        return total

    def lease(self, seconds: float, wait: float = 1.0) -> Message | None:
        # task-queue's lease() does not ask for the receive count, which dead-lettering needs.
        response = self.sqs.receive_message(QueueUrl=self.api.qurl, MaxNumberOfMessages=1,
                                            AttributeNames=["ApproximateReceiveCount"],
                                            VisibilityTimeout=max(1, int(round(seconds))), WaitTimeSeconds=int(wait))
        messages = response.get("Messages", [])
        if not messages:
            return None
        raw = messages[0]
        return Message(json.loads(raw["Body"]), raw["ReceiptHandle"], int(raw["Attributes"]["ApproximateReceiveCount"]))

    def renew(self, message: Message, seconds: float) -> None:
        self.sqs.change_message_visibility(QueueUrl=self.api.qurl, ReceiptHandle=message.handle,
                                           VisibilityTimeout=max(1, int(round(seconds))))

    def release(self, message: Message, delay: float = 0) -> None:
        self.sqs.change_message_visibility(QueueUrl=self.api.qurl, ReceiptHandle=message.handle,
                                           VisibilityTimeout=int(round(delay)))

    def delete(self, message: Message) -> None:
        self.api.delete(message.handle)

    def counts(self) -> tuple[int, int]:
        status = self.api.status()
        waiting = int(status["ApproximateNumberOfMessages"]) + int(status["ApproximateNumberOfMessagesDelayed"])
        return waiting, int(status["ApproximateNumberOfMessagesNotVisible"])

    def empty(self) -> bool:
        return sum(self.counts()) == 0

    def release_all(self) -> None:
        raise PumiceError("SQS cannot take back leases held by other workers; they return on their own when their "
                          "lease time ends (pumice worker --lease-seconds)")

    def purge(self) -> None:
        self.api.purge(native=True)

    def pointer(self) -> dict[str, Any] | None:
        tags = self.sqs.list_queue_tags(QueueUrl=self.api.qurl).get("Tags", {})
        return json.loads(tags[self.POINTER_TAG]) if self.POINTER_TAG in tags else None

    def set_pointer(self, pointer: dict[str, Any]) -> None:
        text = json.dumps(pointer, separators=(",", ":"))
        if len(text) > 256 and pointer.get("notes"):  # SQS's limit for a tag value: the notes are said elsewhere too
            text = json.dumps({**pointer, "notes": []}, separators=(",", ":"))
        if len(text) > 256:
            raise PumiceError(f"the destination URL is too long to record on an SQS queue ({len(text)} > 256 characters)")
        self.sqs.tag_queue(QueueUrl=self.api.qurl, Tags={self.POINTER_TAG: text})

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        # No lock on SQS: two workers may both hand over a stage, enqueueing its tasks twice. Tasks
        # are idempotent and the ledger counts each once, so the cost is only the repeated work.
        yield
