"""EC2 ownership: which stacks' runs launch, change and terminate EC2 instances.

The data is CloudTrail's, not Spacelift's: CloudTrail logs land in S3, an Athena query
exports the EC2 events to S3 as JSON (the README's "EC2 ownership" section has the query),
and this area reads those exports, as Cartography's Spacelift integration does (its
``--spacelift-ec2-ownership-*`` settings, section 3 of its Spacelift configuration guide).
The area's I/O is S3 (``exporter.s3export``), not the Spacelift API; its logic is pure
(``ec2_ledger``).

Each poll lists the prefix and reads only the objects it has not read as they are now (key
and ETag), oldest first, streaming each (``exporter.jsonstream``: a 1 GB export costs a
bounded window of memory). A file's counts are merged only once it was read to its end, so a
poll cut short by its time budget leaves nothing half-counted: the files left are read next
poll. What was read (and what it added up to) is kept in ``--state.file``, so a restart reads
nothing twice and counts each event once.

No per-run or per-instance labels: per-run detail stays in the export (README).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.areas.base import AreaContext, AreaSpec, FamilyBuilder, OptionSpec, counter, gauge
from exporter.areas.ec2_ledger import (
    FILE_OUTCOMES,
    OUTCOMES,
    FileTally,
    Ledger,
    classify,
)
from exporter.jsonstream import CHUNK, Skipped, UnreadableExport, records
from exporter.s3export import (
    ExportStoreError,
    ObjectChanged,
    ObjectRef,
    OutOfTime,
    S3Export,
    boto3_missing,
)

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient

log = logging.getLogger(__name__)

MAX_RECORD = 1024 * 1024  # characters of one record (CloudTrail's own events are far smaller)
MAX_OBJECTS = 100_000  # objects listed under the prefix

_L = ("stack_id", "aws_account", "aws_region")
INSTANCE_EVENTS = counter(
    "spacelift_ec2_instance_events_total",
    "EC2 instances named in CloudTrail events made by the stack's Spacelift runs (one per "
    "instance and event), per AWS account, region and event name, from the exports read.",
    *_L,
    "event",
)
LAUNCHED = gauge(
    "spacelift_ec2_instances_launched_not_terminated",
    "Instances the stack's runs launched (RunInstances) that no TerminateInstances in the "
    "exports read has ended since, at the last poll.",
    *_L,
)
OLDEST_LAUNCH = gauge(
    "spacelift_ec2_instances_oldest_launch_timestamp_seconds",
    "Launch time of the oldest instance counted in "
    "spacelift_ec2_instances_launched_not_terminated, at the last poll.",
    *_L,
)
RECORDS = counter(
    "spacelift_ec2_export_records_total",
    "CloudTrail records read from the exports, by outcome: counted, no_instance, "
    "not_spacelift, other_account, seen_before (in a rewritten export), or skipped as "
    "malformed, too_large or too_deep.",
    "outcome",
)
FILES = counter(
    "spacelift_ec2_export_files_total",
    "Export files read to their end (read), or given up as unreadable (not JSON, broken "
    "gzip, cut short: the records before the fault are counted).",
    "outcome",
)
NEWEST = gauge(
    "spacelift_ec2_export_newest_event_timestamp_seconds",
    "Time of the newest CloudTrail event counted from the exports, at the last poll.",
)
TRACKED_DROPPED = counter(
    "spacelift_ec2_instances_untracked_total",
    "Launches left out of spacelift_ec2_instances_launched_not_terminated because it "
    "already tracks the most instances it may hold (100000).",
)


def check(options: Mapping[str, Any]) -> tuple[str, str] | None:
    if not options.get("s3_bucket"):
        return "s3_bucket", "is required when the area is enabled"
    missing = boto3_missing()
    if missing:
        return "enabled", missing
    return None


@dataclass(frozen=True)
class Snapshot:
    events: tuple[tuple[tuple[str, str, str, str], int], ...]
    launched: tuple[tuple[tuple[str, str, str], int, float], ...]
    records: tuple[tuple[str, int], ...]
    files: tuple[tuple[str, int], ...]
    newest: float | None
    dropped: int
    files_left: int  # files not read this poll (time budget): read next poll


def snapshot(ledger: Ledger, files_left: int = 0) -> Snapshot:
    return Snapshot(
        events=tuple(sorted(ledger.events.items())),
        launched=tuple((s, n, t) for s, (n, t) in sorted(ledger.launched().items())),
        records=tuple((o, ledger.records.get(o, 0)) for o in OUTCOMES),
        files=tuple((o, ledger.file_outcomes.get(o, 0)) for o in FILE_OUTCOMES),
        newest=ledger.newest,
        dropped=ledger.dropped,
        files_left=files_left,
    )


class Poller:
    def __init__(self, ctx: AreaContext, store: S3Export | None = None) -> None:
        self.account = ctx.account
        o = ctx.options
        self.spacelift_account = str(o.get("spacelift_account") or "")
        self.max_record = MAX_RECORD
        http = ctx.http
        self.poll_timeout = http.poll_timeout if http else 120.0
        self.store = store or S3Export(
            str(o.get("s3_bucket") or ""),
            str(o.get("s3_prefix") or ""),
            profile=str(o.get("aws_profile") or ""),
            endpoint_url=str(o.get("endpoint_url") or ""),
            region=str(o.get("aws_region") or ""),
            timeout=http.timeout if http else 10.0,
            retries=http.retries if http else 3,
        )
        self.ledger = self._restore(ctx.state)

    def _restore(self, raw: Any) -> Ledger:
        if raw is None:
            return Ledger()
        try:
            ledger = Ledger.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "ec2_ownership state in the state file is unusable: every export is read again",
                extra={"account": self.account, "error": repr(exc)[:200]},
            )
            return Ledger()
        log.info(
            "ec2_ownership state restored from the state file",
            extra={"account": self.account, "files": len(ledger.files)},
        )
        return ledger

    def export_state(self) -> Any:
        if not self.ledger.changed:
            return None
        self.ledger.changed = False
        return self.ledger.to_json()

    def poll(self, client: SpaceliftClient | None = None) -> Snapshot:
        # The Spacelift client is not used: this area's I/O is S3, bounded by the same poll
        # budget (http.poll_timeout) and per-request timeout and retries.
        deadline = time.monotonic() + self.poll_timeout
        listing = self.store.list(deadline, MAX_OBJECTS)
        by_key = {o.key: o for o in listing}
        todo = sorted(
            (
                (by_key[k], after)
                for k, after in self.ledger.pending((o.key, o.etag) for o in listing)
            ),
            key=lambda item: (item[0].modified, item[0].key),
        )
        # Files read are merged only when the poll succeeds (the state file is written
        # then): a poll that fails half-way leaves them to be read again, never twice.
        tallies: list[FileTally] = []
        left = 0
        for n, (obj, after) in enumerate(todo):
            try:
                tally = self._read(obj, after, deadline)
            except ObjectChanged:
                continue  # deleted or replaced since the listing: the next poll sees it
            except OutOfTime:
                if n == 0:
                    raise ExportStoreError(
                        f"s3://{self.store.bucket}/{obj.key} ({obj.size} bytes) cannot be read "
                        "within http.poll_timeout: raise it"
                    ) from None
                left = len(todo) - n
                log.info(
                    "poll time budget used up; the other export files are read next poll",
                    extra={"account": self.account, "files_left": left},
                )
                break
            tallies.append(tally)
        self.ledger.forget_missing(set(by_key))
        for tally in tallies:
            self.ledger.merge(tally)
        return snapshot(self.ledger, left)

    def _read(self, obj: ObjectRef, after: float | None, deadline: float) -> FileTally:
        """One file's tally, read to its end (or to the point past which it is unreadable)."""
        tally = FileTally(obj.key, obj.etag, after)
        chunks = self.store.read(obj, deadline, CHUNK)
        try:
            for item in records(chunks, max_record=self.max_record):
                if isinstance(item, Skipped):
                    tally.add(item.reason)
                else:
                    tally.add(classify(item, self.spacelift_account))
        except UnreadableExport as exc:
            tally.unreadable = str(exc)
            log.warning(
                "export file unreadable past a point; the records before it are counted",
                extra={"account": self.account, "key": obj.key, "error": str(exc)},
            )
        return tally

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        for m in SPEC.metrics:
            out.declare(m)
        a = self.account
        for (stack, account, region, event), n in snapshot.events:
            out.add(INSTANCE_EVENTS, (a, stack, account, region, event), n)
        for (stack, account, region), n, oldest in snapshot.launched:
            out.add(LAUNCHED, (a, stack, account, region), n)
            out.add(OLDEST_LAUNCH, (a, stack, account, region), oldest)
        for outcome, n in snapshot.records:
            out.add(RECORDS, (a, outcome), n)
        for outcome, n in snapshot.files:
            out.add(FILES, (a, outcome), n)
        if snapshot.newest is not None:
            out.add(NEWEST, (a,), snapshot.newest)
        out.add(TRACKED_DROPPED, (a,), snapshot.dropped)


def _str_option(default: str, help: str) -> OptionSpec:
    return OptionSpec(str, default, help)


SPEC = AreaSpec(
    name="ec2_ownership",
    title="EC2 ownership",
    default_interval=300.0,
    create=Poller,
    documents={},
    metrics=(
        INSTANCE_EVENTS,
        LAUNCHED,
        OLDEST_LAUNCH,
        RECORDS,
        FILES,
        NEWEST,
        TRACKED_DROPPED,
    ),
    permission="No Spacelift permission: reads CloudTrail exports from S3 with the standard "
    "AWS credential chain (`s3:ListBucket` on the bucket, `s3:GetObject` on the prefix).",
    options={
        "s3_bucket": _str_option(
            "", "string: bucket of the CloudTrail exports (`--spacelift-ec2-ownership-s3-bucket`)"
        ),
        "s3_prefix": _str_option(
            "", "string: prefix of the export files (`--spacelift-ec2-ownership-s3-prefix`)"
        ),
        "aws_profile": _str_option(
            "",
            "string: AWS profile for S3 (`--spacelift-ec2-ownership-aws-profile`); empty: "
            "the standard credential chain",
        ),
        "endpoint_url": _str_option(
            "", "string: S3 endpoint of an S3-compatible store (MinIO, Ceph...); empty: AWS"
        ),
        "aws_region": _str_option("", "string: region of the bucket; empty: from the chain"),
        "spacelift_account": _str_option(
            "",
            "string: count only runs of this Spacelift account (the session name's third "
            "part), for trails several Spacelift accounts share; empty: every account",
        ),
    },
    enabled_by_default=False,
    check=check,
)
