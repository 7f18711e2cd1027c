"""EC2 ownership, pure logic: CloudTrail records in, counts and launched instances out.

No I/O and no clock: ``classify`` reads one record as Athena exports it, ``Ledger`` keeps
what the exports read so far add up to (and which files were read), and round-trips through
the state file.

How a Spacelift run is recognised (sources cited where the rule comes from):

- Cartography's ``cartography/intel/spacelift/ec2_ownership.py`` reads ``useridentity`` as
  the string Athena renders for the struct (``{type=AssumedRole, ..., arn=arn:aws:sts::ACCOUNT:
  assumed-role/ROLE/SESSION, ...}``), takes the run id as the part of the session name before
  the first ``@``, and instance ids as ``i-`` + 8 to 17 hex digits anywhere in ``resources``,
  ``requestparameters`` and ``responseelements``. The same is done here; ``useridentity`` as
  a JSON object (with ``arn``) is read too.
- Spacelift's Terraform provider docs (``docs/resources/aws_integration.md`` of
  spacelift-io/terraform-provider-spacelift) give the session name Spacelift uses when it
  assumes the integration's role: ``$runID@$stackID@$accountName``, truncated to 64
  characters. So the stack id is the second part, and the third names the Spacelift account
  (used to leave out other accounts' runs when several share a trail). A run id is a ULID.
  A stack id longer than 37 characters is cut short by the 64-character limit: it is
  reported as it appears.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Cartography's instance id pattern.
INSTANCE_ID = re.compile(r"\b(i-[0-9a-f]{8,17})\b")
_ARN_IN_TEXT = re.compile(r"arn=(arn:aws[a-z-]*:sts::\d{12}:assumed-role/[^/,}\s]+/[^,}\s]+)")
_ARN = re.compile(r"arn:aws[a-z-]*:sts::(\d{12}):assumed-role/[^/]+/(.+)")
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_STACK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=,-]{0,63}")
_EVENT = re.compile(r"[A-Za-z0-9]{1,64}")
_REGION = re.compile(r"[a-z0-9-]{1,32}")
_AWS_ACCOUNT = re.compile(r"\d{12}")
SESSION_NAME_MAX = 64  # STS's limit, to which Spacelift truncates its session names

MAX_DEPTH = 16  # nesting read in the fields searched for instance ids
MAX_INSTANCES_PER_RECORD = 1000
MAX_TRACKED_INSTANCES = 100_000  # launched, not terminated: held in memory and the state file

LAUNCH = "RunInstances"
TERMINATE = "TerminateInstances"

# Record outcomes, the values of spacelift_ec2_export_records_total's `outcome` label.
COUNTED = "counted"  # a Spacelift run's record naming instances: counted
NO_INSTANCE = "no_instance"  # a Spacelift run's record naming no instance
NOT_SPACELIFT = "not_spacelift"  # another identity (a person, a role, another tool)
OTHER_ACCOUNT = "other_account"  # a run of another Spacelift account
SEEN_BEFORE = "seen_before"  # in a rewritten export, no newer than what was read from it
MALFORMED = "malformed"
TOO_LARGE = "too_large"
TOO_DEEP = "too_deep"
OUTCOMES = (
    COUNTED,
    NO_INSTANCE,
    NOT_SPACELIFT,
    OTHER_ACCOUNT,
    SEEN_BEFORE,
    MALFORMED,
    TOO_LARGE,
    TOO_DEEP,
)
FILE_READ = "read"
FILE_UNREADABLE = "unreadable"
FILE_OUTCOMES = (FILE_READ, FILE_UNREADABLE)


class _TooDeep(Exception):
    pass


@dataclass(frozen=True)
class Event:
    """One CloudTrail record of a Spacelift run (or a termination by anyone)."""

    stack_id: str  # "" when the identity is not a Spacelift run
    aws_account: str
    region: str
    name: str
    time: float
    instances: tuple[str, ...]


def session_of(useridentity: Any) -> tuple[str, str] | None:
    """(AWS account, session name) of an assumed-role identity, else None."""
    if isinstance(useridentity, Mapping):
        arn = useridentity.get("arn")
    elif isinstance(useridentity, str):
        m = _ARN_IN_TEXT.search(useridentity)
        arn = m.group(1) if m else None
    else:
        raise ValueError("useridentity")
    if not isinstance(arn, str):
        return None
    m = _ARN.fullmatch(arn.strip())
    return (m.group(1), m.group(2)) if m else None


def spacelift_run(session: str) -> tuple[str, str, str] | None:
    """(run id, stack id, Spacelift account) from ``$runID@$stackID@$accountName``."""
    parts = session.split("@")
    if len(parts) < 2 or not _ULID.fullmatch(parts[0]) or not _STACK_ID.fullmatch(parts[1]):
        return None
    return parts[0], parts[1], "@".join(parts[2:])


def instance_ids(value: Any) -> set[str]:
    """Instance ids anywhere in a field: JSON text (as Athena exports it) or nested values."""
    found: set[str] = set()
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            found.update(INSTANCE_ID.findall(v))
        elif isinstance(v, Mapping | list):
            if depth >= MAX_DEPTH:
                raise _TooDeep
            items = v.values() if isinstance(v, Mapping) else v
            stack.extend((item, depth + 1) for item in items)
        if len(found) > MAX_INSTANCES_PER_RECORD:
            break
    return found


def parse_time(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError("eventtime")
    t = dt.datetime.fromisoformat(value.strip())
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)  # CloudTrail times are UTC
    return t.timestamp()


def classify(record: Any, spacelift_account: str = "") -> Event | str:
    """The record as an ``Event`` worth counting, or the outcome that leaves it out."""
    if not isinstance(record, Mapping):
        return MALFORMED
    try:
        session = session_of(record.get("useridentity"))
        run = spacelift_run(session[1]) if session else None
        name = record.get("eventname")
        if run is None and name != TERMINATE:
            return NOT_SPACELIFT  # only terminations by anyone matter: they end a launch
        if not isinstance(name, str) or not _EVENT.fullmatch(name):
            return MALFORMED
        when = parse_time(record.get("eventtime"))
        region = record.get("awsregion")
        if not isinstance(region, str) or not _REGION.fullmatch(region):
            return MALFORMED
        account = record.get("account") or record.get("recipientaccountid")
        if not (isinstance(account, str) and _AWS_ACCOUNT.fullmatch(account)):
            account = session[0] if session else ""
        ids: set[str] = set()
        for key in ("resources", "requestparameters", "responseelements"):
            if record.get(key) is not None:
                ids |= instance_ids(record[key])
    except _TooDeep:
        return TOO_DEEP
    except (ValueError, TypeError):
        return MALFORMED
    if run is None:
        if not ids:
            return NOT_SPACELIFT
        return Event("", account, region, name, when, tuple(sorted(ids)))
    assert session is not None
    if spacelift_account and run[2]:
        # The account part may be cut short by the 64-character limit: compare what is there.
        cut = len(session[1]) >= SESSION_NAME_MAX
        named = run[2]
        if not (spacelift_account.startswith(named) if cut else spacelift_account == named):
            return OTHER_ACCOUNT
    if not ids:
        return NO_INSTANCE
    return Event(run[1], account, region, name, when, tuple(sorted(ids)))


# -- the ledger --------------------------------------------------------------------------------

Series = tuple[str, str, str]  # stack id, AWS account, region


@dataclass
class FileTally:
    """What one file adds; merged into the ledger only once the file was read to its end."""

    key: str
    etag: str
    after: float | None  # a rewritten export: only its events newer than this count
    records: dict[str, int] = field(default_factory=dict)
    events: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    launched: dict[str, tuple[Series, float]] = field(default_factory=dict)
    terminated: dict[str, float] = field(default_factory=dict)
    newest: float | None = None
    unreadable: str | None = None

    def add(self, item: Event | str) -> None:
        if isinstance(item, str):
            self.records[item] = self.records.get(item, 0) + 1
            return
        if self.after is not None and item.time <= self.after:
            self.records[SEEN_BEFORE] = self.records.get(SEEN_BEFORE, 0) + 1
            return
        self.newest = item.time if self.newest is None else max(self.newest, item.time)
        if item.name == TERMINATE:
            for i in item.instances:
                self.terminated[i] = max(item.time, self.terminated.get(i, item.time))
                if self.launched.get(i, (None, item.time))[1] <= item.time:
                    self.launched.pop(i, None)
        if not item.stack_id:
            self.records[NOT_SPACELIFT] = self.records.get(NOT_SPACELIFT, 0) + 1
            return
        self.records[COUNTED] = self.records.get(COUNTED, 0) + 1
        key = (item.stack_id, item.aws_account, item.region, item.name)
        self.events[key] = self.events.get(key, 0) + len(item.instances)
        if item.name == LAUNCH:
            series = (item.stack_id, item.aws_account, item.region)
            for i in item.instances:
                if self.terminated.get(i, -1.0) < item.time:
                    self.launched[i] = (series, item.time)


@dataclass
class Ledger:
    files: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # key: etag, newest
    records: dict[str, int] = field(default_factory=dict)
    file_outcomes: dict[str, int] = field(default_factory=dict)
    events: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    instances: dict[str, tuple[Series, float]] = field(default_factory=dict)
    newest: float | None = None
    changed: bool = False
    dropped: int = 0  # launches not tracked because MAX_TRACKED_INSTANCES was reached

    def pending(self, listing: Iterable[tuple[str, str]]) -> Iterator[tuple[str, float | None]]:
        """Keys of the listing not read as they are now, each with its rewrite watermark."""
        for key, etag in listing:
            seen = self.files.get(key)
            if seen is None:
                yield key, None
            elif seen[0] != etag:
                yield key, seen[1] if seen[1] is not None else float("-inf")

    def forget_missing(self, keys: set[str]) -> None:
        """Files deleted from the bucket: forgotten (their counts stay; state stays bounded)."""
        gone = [k for k in self.files if k not in keys]
        for k in gone:
            del self.files[k]
        if gone:
            self.changed = True

    def merge(self, tally: FileTally) -> None:
        for k, n in tally.records.items():
            self.records[k] = self.records.get(k, 0) + n
        for ek, n in tally.events.items():
            self.events[ek] = self.events.get(ek, 0) + n
        for i, when in tally.terminated.items():
            held = self.instances.get(i)
            if held is not None and held[1] <= when:
                del self.instances[i]
        for i, launch in tally.launched.items():
            if i in self.instances or len(self.instances) < MAX_TRACKED_INSTANCES:
                self.instances[i] = launch
            else:
                self.dropped += 1
        outcome = FILE_UNREADABLE if tally.unreadable else FILE_READ
        self.file_outcomes[outcome] = self.file_outcomes.get(outcome, 0) + 1
        previous = self.files.get(tally.key, ("", None))[1]
        newest = max((t for t in (previous, tally.newest) if t is not None), default=None)
        self.files[tally.key] = (tally.etag, newest)
        if tally.newest is not None:
            self.newest = tally.newest if self.newest is None else max(self.newest, tally.newest)
        self.changed = True

    def launched(self) -> dict[Series, tuple[int, float]]:
        """Per series: instances launched and not terminated, and the oldest launch time."""
        out: dict[Series, tuple[int, float]] = {}
        for series, when in self.instances.values():
            n, oldest = out.get(series, (0, when))
            out[series] = (n + 1, min(oldest, when))
        return out

    # -- state file ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "files": {k: [e, t] for k, (e, t) in self.files.items()},
            "records": self.records,
            "file_outcomes": self.file_outcomes,
            "events": [[*k, n] for k, n in self.events.items()],
            "instances": {i: [*s, t] for i, (s, t) in self.instances.items()},
            "newest": self.newest,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Ledger:
        """Raises ValueError (or KeyError/TypeError) on anything but what ``to_json`` wrote."""
        if not isinstance(raw, dict) or raw.get("format") != 1:
            raise ValueError("not an ec2_ownership ledger")
        newest = raw.get("newest")
        return cls(
            files={str(k): (str(e), _opt_float(t)) for k, (e, t) in raw["files"].items()},
            records={str(k): int(n) for k, n in raw["records"].items()},
            file_outcomes={str(k): int(n) for k, n in raw["file_outcomes"].items()},
            events={(str(s), str(a), str(r), str(e)): int(n) for s, a, r, e, n in raw["events"]},
            instances={
                str(i): ((str(s), str(a), str(r)), float(t))
                for i, (s, a, r, t) in raw["instances"].items()
            },
            newest=_opt_float(newest),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
