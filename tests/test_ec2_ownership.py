"""The ec2_ownership area: CloudTrail exports read from a real S3 API (moto's server mode).

Pure parts first (the stream reader, record classification), then the area end to end:
exporter -> S3 on loopback, with the simulator as the account's Spacelift so the other areas
run beside it and must be unaffected by what happens to this one.
"""

from __future__ import annotations

import gzip
import json
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter import cli
from exporter.app import App
from exporter.areas import ec2_ledger as el
from exporter.areas import ec2_ownership
from exporter.config import ConfigError, Overrides, load
from exporter.jsonstream import Skipped, UnreadableExport, records
from exporter.simulator import SimClock, Simulator
from exporter.web import landing_page
from tests.conftest import CREDENTIALS, make_app, value
from tests.support.s3server import Keys, MotoS3

AWS = "123456789012"
RUN_NET = "01HZX3K5J8Q2W9E7R6T4Y1V0PA"
RUN_NET2 = "01HZX3K5J8Q2W9E7R6T4Y1V0PB"
RUN_WEB = "01HZX3K5J8Q2W9E7R6T4Y1V0PC"
AREA = ("sim", "ec2_ownership")


# -- sample exports, as Athena renders CloudTrail's table ---------------------------------------


def identity(session: str, role: str = "spacelift-integration") -> str:
    """``useridentity`` as Athena exports the struct: text, as Cartography reads it."""
    return (
        f"{{type=AssumedRole, principalid=AROAEXAMPLE:{session}, "
        f"arn=arn:aws:sts::{AWS}:assumed-role/{role}/{session}, accountid={AWS}, "
        "invokedby=null, accesskeyid=ASIAEXAMPLE, username=null}"
    )


def record(
    event: str,
    session: str,
    instances: list[str],
    when: str,
    region: str = "eu-west-1",
    **extra: Any,
) -> dict[str, Any]:
    items = {"items": [{"instanceId": i} for i in instances]}
    rec: dict[str, Any] = {
        "eventversion": "1.09",
        "useridentity": identity(session),
        "eventtime": when,
        "eventsource": "ec2.amazonaws.com",
        "eventname": event,
        "awsregion": region,
        "account": AWS,
        "resources": None,
        "requestparameters": json.dumps({"instancesSet": items})
        if event != "RunInstances"
        else json.dumps({"instanceType": "t3.micro", "minCount": len(instances)}),
        "responseelements": json.dumps({"reservationId": "r-0abc", "instancesSet": items}),
    }
    rec.update(extra)
    return rec


def run_session(run: str, stack: str, account: str = "acme") -> str:
    return f"{run}@{stack}@{account}"  # Spacelift's $runID@$stackID@$accountName


I1, I2, I3, I9 = "i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002", "i-0a1b2c3d", "i-0123456789abcdef9"

EXPORT_1 = [
    record("RunInstances", run_session(RUN_NET, "net"), [I1, I2], "2026-11-30T10:00:00Z"),
    record("TerminateInstances", run_session(RUN_NET2, "net"), [I1], "2026-11-30T11:00:00Z"),
    record("RunInstances", run_session(RUN_WEB, "web"), [I3], "2026-11-30T12:00:00Z"),
    # A person's launch: not a Spacelift run, left out.
    record("RunInstances", "alice@example.com", [I9], "2026-11-30T12:30:00Z"),
    # A Spacelift run's event naming no instance.
    {**record("CreateTags", run_session(RUN_WEB, "web"), [], "2026-11-30T12:40:00Z")},
    # Malformed: a time that is not one, and a record that is not an object.
    record("RunInstances", run_session(RUN_WEB, "web"), [I9], "yesterday"),
    ["not", "a", "record"],
]
# The second file: the web stack's instance terminated by a person (it no longer runs).
EXPORT_2 = [
    record("TerminateInstances", "bob", [I3], "2026-12-01T09:00:00Z"),
    record("StopInstances", run_session(RUN_NET2, "net"), [I2], "2026-12-01T09:30:00Z"),
]


def as_array(recs: list[Any]) -> bytes:
    return json.dumps(recs).encode()


def as_lines_gz(recs: list[Any]) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode())


# -- the stream reader ------------------------------------------------------------------------


def pieces(data: bytes, size: int = 5) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def read(data: bytes, max_record: int = 300) -> list[Any]:
    return list(records(pieces(data), max_record=max_record, chunk=64))


@pytest.mark.parametrize(
    "encode",
    [
        as_array,
        as_lines_gz,
        lambda r: "\n".join(json.dumps(x) for x in r).encode(),
        lambda r: gzip.compress(as_array(r)),
    ],
    ids=["array", "jsonl.gz", "jsonl", "array.gz"],
)
def test_reader_reads_every_layout_alike(encode: Any) -> None:
    recs = [{"a": 1, "s": 'x"\\y é'}, {"b": [1, {"c": None}]}, {}]
    assert read(encode(recs)) == recs


@pytest.mark.parametrize("lines", [False, True], ids=["array", "jsonl"])
def test_reader_skips_bad_records_and_reads_on(lines: bool) -> None:
    big = '{"s": "' + "x" * 1000 + '"}'  # over max_record
    deep = "[" * 5000 + "]" * 5000  # deeper than the decoder allows
    parts = ['{"a": 1}', '{"b": tru}', big, '{"c": 3}'] + ([] if lines else [deep, '{"d": 4}'])
    data = ("\n".join(parts) if lines else "[" + ",".join(parts) + "]").encode()
    got = read(data, max_record=300 if lines else 20000)
    want: list[Any] = [{"a": 1}, Skipped("malformed"), Skipped("too_large"), {"c": 3}]
    if lines:
        assert got == want
    else:  # the big one fits the larger window: it is read
        read_whole = [{"a": 1}, Skipped("malformed"), {"s": "x" * 1000}, {"c": 3}]
        assert got == [*read_whole, Skipped("too_deep"), {"d": 4}]


@pytest.mark.parametrize(
    "data",
    [b'[{"a": 1}, {"b": 2}', b'[{"a": 1}, {"b": ', b"<html>", b"\x1f\x8b\x08\x00junk"],
    ids=["unclosed", "cut-in-record", "not-json", "bad-gzip"],
)
def test_reader_reports_an_unreadable_file_after_what_it_could_read(data: bytes) -> None:
    got: list[Any] = []
    with pytest.raises(UnreadableExport):
        for item in records(pieces(data), max_record=100, chunk=64):
            got.append(item)
    assert got in ([], [{"a": 1}], [{"a": 1}, {"b": 2}])


# -- records -> events ------------------------------------------------------------------------


def test_a_spacelift_run_is_recognised_from_its_session_name() -> None:
    ev = el.classify(EXPORT_1[0])
    assert ev == el.Event("net", AWS, "eu-west-1", "RunInstances", 1796032800.0, (I1, I2))
    # useridentity as a JSON object (a raw CloudTrail record) reads the same.
    raw = {**EXPORT_1[0], "useridentity": {"type": "AssumedRole", "arn": identity_arn()}}
    assert el.classify(raw) == ev
    assert el.classify(EXPORT_1[3]) == el.NOT_SPACELIFT
    assert el.classify(EXPORT_1[4]) == el.NO_INSTANCE
    assert el.classify(EXPORT_1[5]) == el.MALFORMED
    assert el.classify(EXPORT_1[6]) == el.MALFORMED
    assert el.classify({**EXPORT_1[0], "awsregion": None}) == el.MALFORMED
    # Another Spacelift account's run, when the area is told which account it counts.
    assert el.classify(EXPORT_1[0], spacelift_account="acme") == ev
    assert el.classify(EXPORT_1[0], spacelift_account="other") == el.OTHER_ACCOUNT
    # A session name cut at 64 characters keeps what fits of the account name.
    long = f"{RUN_NET}@{'s' * 30}@acme-corporation-production"[:64]
    rec = record("RunInstances", long, [I1], "2026-11-30T10:00:00Z")
    assert isinstance(el.classify(rec, spacelift_account="acme-corporation-production"), el.Event)
    assert el.classify(rec, spacelift_account="acme") == el.OTHER_ACCOUNT
    # Nested past MAX_DEPTH in a field searched for instance ids.
    nested: Any = I1
    for _ in range(el.MAX_DEPTH + 1):
        nested = [nested]
    assert el.classify({**EXPORT_1[0], "resources": nested}) == el.TOO_DEEP


def identity_arn() -> str:
    return f"arn:aws:sts::{AWS}:assumed-role/spacelift-integration/{run_session(RUN_NET, 'net')}"


# -- the area against S3 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoS3]:
    server = MotoS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(s3: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    name = f"exports-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    # The standard credential chain, from the environment only: no host config, and never
    # the instance metadata service (it is not on loopback).
    use_keys(monkeypatch, s3.admin)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return name


def use_keys(monkeypatch: pytest.MonkeyPatch, keys: Keys) -> None:
    for k, v in keys.env().items():
        monkeypatch.setenv(k, v)


def ec2_app(
    sim: Simulator,
    clock: SimClock,
    s3: MotoS3,
    bucket: str,
    state: Path | None = None,
    profile: str = "",
) -> App:
    options = {
        "enabled": True,
        "s3_bucket": bucket,
        "s3_prefix": "cloudtrail/",
        "endpoint_url": s3.url,
        "aws_profile": profile,
    }
    raw: dict[str, Any] = {"areas": {"ec2_ownership": options}}
    if state is not None:
        raw["state_file"] = str(state)
    return make_app(sim, clock, **raw)


def put(s3: MotoS3, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key="cloudtrail/" + key, Body=body)


def ec2(app: App, name: str, **labels: str) -> float | None:
    return value(app, name, account="sim", **labels)


def events(app: App, stack: str, event: str) -> float | None:
    labels = {"stack_id": stack, "aws_account": AWS, "aws_region": "eu-west-1", "event": event}
    return ec2(app, "spacelift_ec2_instance_events_total", **labels)


def launched(app: App, stack: str) -> float | None:
    labels = {"stack_id": stack, "aws_account": AWS, "aws_region": "eu-west-1"}
    return ec2(app, "spacelift_ec2_instances_launched_not_terminated", **labels)


def outcome(app: App, what: str, name: str = "spacelift_ec2_export_records_total") -> float | None:
    return ec2(app, name, outcome=what)


def test_exports_counted_once_across_new_and_deleted_files_and_restarts(
    sim: Simulator, clock: SimClock, s3: MotoS3, bucket: str, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    put(s3, bucket, "2026/11/30/export.json", as_array(EXPORT_1))
    s3.client().put_object(Bucket=bucket, Key="elsewhere/ignored.json", Body=b"[]")
    app = ec2_app(sim, clock, s3, bucket, state)
    assert app.poll_all()
    assert events(app, "net", "RunInstances") == 2
    assert events(app, "net", "TerminateInstances") == 1
    assert events(app, "web", "RunInstances") == 1
    assert launched(app, "net") == 1  # i-2 (i-1 was terminated by the stack)
    assert launched(app, "web") == 1
    assert (outcome(app, "counted"), outcome(app, "not_spacelift")) == (3, 1)
    assert (outcome(app, "no_instance"), outcome(app, "malformed")) == (1, 2)
    assert outcome(app, "read", "spacelift_ec2_export_files_total") == 1
    newest = ec2(app, "spacelift_ec2_export_newest_event_timestamp_seconds")
    assert newest == 1796040000.0  # 2026-11-30T12:00:00Z, the newest counted event

    # A new file between polls: only it is read.
    put(s3, bucket, "2026/12/01/export.jsonl.gz", as_lines_gz(EXPORT_2))
    assert app.poll(AREA)
    assert events(app, "net", "RunInstances") == 2  # not counted again
    assert events(app, "net", "StopInstances") == 1
    assert launched(app, "web") is None  # terminated by a person: no longer running
    assert launched(app, "net") == 1
    assert outcome(app, "read", "spacelift_ec2_export_files_total") == 2

    # A deleted file: nothing moves back, and the state forgets it (it stays bounded).
    s3.client().delete_object(Bucket=bucket, Key="cloudtrail/2026/11/30/export.json")
    assert app.poll(AREA)
    assert events(app, "net", "RunInstances") == 2
    saved = json.loads(state.read_text())["sections"]["sim/ec2_ownership"]
    assert list(saved["files"]) == ["cloudtrail/2026/12/01/export.jsonl.gz"]

    # A restart from the state file reads nothing again.
    app2 = ec2_app(sim, clock, s3, bucket, state)
    assert app2.poll(AREA)
    assert events(app2, "net", "RunInstances") == 2
    assert events(app2, "net", "StopInstances") == 1
    assert outcome(app2, "read", "spacelift_ec2_export_files_total") == 2
    assert launched(app2, "net") == 1


def test_a_rewritten_export_counts_only_its_newer_events(
    sim: Simulator,
    clock: SimClock,
    s3: MotoS3,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Credentials from a named profile (--spacelift-ec2-ownership-aws-profile), none in env.
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[audit]\naws_access_key_id = {s3.admin.access_key}\n"
        f"aws_secret_access_key = {s3.admin.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    use_keys(monkeypatch, Keys("AKIANOTAKEY000000000", "env-keys-are-not-used"))
    put(s3, bucket, "latest.json", as_array(EXPORT_1[:2]))
    app = ec2_app(sim, clock, s3, bucket, profile="audit")
    assert app.poll(AREA)
    assert events(app, "net", "RunInstances") == 2
    put(s3, bucket, "latest.json", as_array(EXPORT_1[:3]))  # same key, one more event
    assert app.poll(AREA)
    assert events(app, "net", "RunInstances") == 2
    assert events(app, "web", "RunInstances") == 1
    assert outcome(app, "seen_before") == 2


@pytest.mark.parametrize(
    "fault", ["wrong-secret", "unknown-key", "missing-bucket", "access-denied"]
)
def test_s3_failures_fail_this_area_only_and_say_why(
    sim: Simulator,
    clock: SimClock,
    s3: MotoS3,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    put(s3, bucket, "export.json", as_array(EXPORT_1))
    target = bucket
    if fault == "wrong-secret":
        use_keys(monkeypatch, Keys(s3.admin.access_key, "not-the-secret"))
    elif fault == "unknown-key":
        use_keys(monkeypatch, Keys("AKIANOTAKEY000000000", "whatever"))
    elif fault == "access-denied":
        use_keys(monkeypatch, s3.nobody)
    else:
        target = bucket + "-gone"
    app = ec2_app(sim, clock, s3, target)
    assert not app.poll_all()

    st = app.store.get(AREA)
    expected = {
        "wrong-secret": "S3 refused the AWS credentials (SignatureDoesNotMatch)",
        "unknown-key": "S3 refused the AWS credentials (InvalidAccessKeyId)",
        "missing-bucket": f"S3 bucket '{target}' does not exist",
        "access-denied": "the AWS identity needs s3:ListBucket",
    }[fault]
    assert expected in (st.error or "")
    assert expected.replace("'", "&#x27;") in landing_page(app)
    assert "not-the-secret" not in (st.error or "") + landing_page(app)
    assert ec2(app, "spacelift_poll_success", area="ec2_ownership") == 0
    assert ec2(app, "spacelift_poll_permission_denied", area="ec2_ownership") == (
        1 if fault == "access-denied" else 0
    )
    assert ec2(app, "spacelift_up") == 1  # Spacelift's API is fine
    for area in ("worker_pools", "stacks", "runs"):
        assert ec2(app, "spacelift_poll_success", area=area) == 1
    assert app.ready() == (fault == "access-denied")  # a permission gap is an answer


def test_a_large_export_is_streamed_in_bounded_memory(
    sim: Simulator, clock: SimClock, s3: MotoS3, bucket: str
) -> None:
    # ~26 MB of JSON Lines, with one record far over the record bound in the middle.
    n = 3_200
    line = json.dumps(
        record("RunInstances", run_session(RUN_NET, "big"), [I1], "2026-11-30T10:00:00Z")
    )
    pad = "x" * (8000 - len(line))
    body = bytearray()
    for k in range(n):
        rec = json.loads(line)
        rec["requestparameters"] = json.dumps({"pad": pad, "n": k})
        rec["responseelements"] = json.dumps(
            {"instancesSet": {"items": [{"instanceId": f"i-{k % 50:08x}"}]}}
        )
        body += json.dumps(rec).encode() + b"\n"
        if k == n // 2:
            body += b'{"huge": "' + b"y" * (3 * 1024 * 1024) + b'"}\n'
    app = ec2_app(sim, clock, s3, bucket)
    assert app.poll(AREA)  # boto3 loads its S3 model on first use: not part of the reading
    put(s3, bucket, "big.jsonl", bytes(body))
    size = len(body)
    del body
    tracemalloc.start()
    try:
        assert app.poll(AREA)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert events(app, "big", "RunInstances") == n
    assert outcome(app, "too_large") == 1
    assert size > 25 * 1024 * 1024
    # A chunk, the record window (1 MiB) and boto3's buffers: a few MiB, whatever the size.
    assert peak < 8 * 1024 * 1024 < size / 3, (peak, size)


# -- configuration ----------------------------------------------------------------------------


def test_config_names_the_key_at_fault() -> None:
    raw = {"accounts": [{"endpoint": "acme.app.spacelift.io"}]}
    with pytest.raises(ConfigError) as err:
        load(
            Overrides(), env=CREDENTIALS, raw={**raw, "areas": {"ec2_ownership": {"enabled": True}}}
        )
    assert err.value.key == "areas.ec2_ownership.s3_bucket"
    # Cartography's flags enable the area with their values.
    cfg = load(
        Overrides(ec2_s3_bucket="trail-exports", ec2_s3_prefix="ec2/", ec2_aws_profile="audit"),
        env=CREDENTIALS,
        raw=raw,
    )
    area = cfg.accounts[0].areas["ec2_ownership"]
    assert area.enabled
    assert (area.options["s3_bucket"], area.options["s3_prefix"]) == ("trail-exports", "ec2/")
    assert area.options["aws_profile"] == "audit"
    assert (
        not load(Overrides(), env=CREDENTIALS, raw=raw).accounts[0].areas["ec2_ownership"].enabled
    )


def test_without_boto3_the_area_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(sys.modules, "boto3", None)  # as when the `aws` extra is not installed
    argv = ["check-config", "--spacelift-api-endpoint", "acme.app.spacelift.io"]
    assert cli.main([*argv, "--spacelift-ec2-ownership-s3-bucket", "trail-exports"]) == 2
    err = capsys.readouterr().err
    assert "areas.ec2_ownership.enabled" in err and "spacelift-exporter[aws]" in err
    assert cli.main(argv) == 0  # not enabled: boto3 is not needed


def test_listing_and_tracking_are_bounded(
    sim: Simulator,
    clock: SimClock,
    s3: MotoS3,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # More objects under the prefix than the area lists: a clear error, nothing read.
    monkeypatch.setattr(ec2_ownership, "MAX_OBJECTS", 2)
    for name in ("a.json", "b.json", "c.json"):
        put(s3, bucket, name, as_array(EXPORT_1[:1]))
    app = ec2_app(sim, clock, s3, bucket)
    assert not app.poll(AREA)
    assert "more than 2 objects under" in (app.store.get(AREA).error or "")
    # Launches past the most instances tracked are counted as events, and as untracked.
    monkeypatch.setattr(ec2_ownership, "MAX_OBJECTS", 10)
    monkeypatch.setattr(el, "MAX_TRACKED_INSTANCES", 1)
    assert app.poll(AREA)
    assert events(app, "net", "RunInstances") == 6  # two instances, three files
    assert launched(app, "net") == 1
    assert ec2(app, "spacelift_ec2_instances_untracked_total") == 3  # i-2, once per file


def test_a_poll_failing_half_way_counts_nothing_it_read(
    sim: Simulator,
    clock: SimClock,
    s3: MotoS3,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(s3, bucket, "a.json", as_array(EXPORT_1))
    put(s3, bucket, "b.json", as_array(EXPORT_2))
    # Allowed to list and to read a.json only: b.json is refused after a.json was read.
    statement = [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"},
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/cloudtrail/a.json",
        },
    ]
    name = f"reader-{uuid.uuid4().hex[:8]}"
    use_keys(
        monkeypatch, s3.user(name, json.dumps({"Version": "2012-10-17", "Statement": statement}))
    )
    app = ec2_app(sim, clock, s3, bucket)
    assert not app.poll(AREA)
    assert app.store.get(AREA).permission_denied
    assert events(app, "net", "RunInstances") is None
    # The policy widened: both files read, a.json counted once.
    statement[1]["Resource"] = f"arn:aws:s3:::{bucket}/*"
    s3.client("iam").put_user_policy(
        UserName=name,
        PolicyName="s3",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statement}),
    )
    assert app.poll(AREA)
    assert events(app, "net", "RunInstances") == 2
    assert outcome(app, "read", "spacelift_ec2_export_files_total") == 2
