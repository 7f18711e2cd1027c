"""What reading a CloudTrail export costs as it grows: time and peak memory.

Generates exports of CloudTrail records as Athena writes them (JSON Lines, and a JSON array;
one record in 20 a Spacelift run launching or terminating instances) and reads each through
the ec2_ownership area's path: stream reader, record classification, per-file tally.
Throughput is measured without tracing; peak memory in a second, traced pass. The export is
generated before either starts, so neither counts making it: the peak is the reader's.

With ``--s3`` the exports are also read from S3 (moto's server on loopback, the same code
as in production), which adds boto3's HTTP reading.

    python bench/ec2_export.py [--sizes 16,64,256] [--s3]

Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.areas.ec2_ledger import FileTally, classify
from exporter.jsonstream import CHUNK, Skipped, records

MB = 1024 * 1024
RUN = "01HZX3K5J8Q2W9E7R6T4Y1V0PA"


def record(k: int) -> dict[str, object]:
    spacelift = k % 20 == 0
    session = f"{RUN}@stack-{k % 37}@acme" if spacelift else f"user-{k % 11}"
    event = ("RunInstances", "TerminateInstances")[k // 20 % 2] if spacelift else "DescribeTags"
    instance = f"i-{k // 40:017x}"
    items = {"items": [{"instanceId": instance}]}
    return {
        "eventversion": "1.09",
        "useridentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::123456789012:assumed-role/role/{session}",
            "accountid": "123456789012",
        },
        "eventtime": f"2026-12-01T{k % 24:02d}:{k % 60:02d}:00Z",
        "eventsource": "ec2.amazonaws.com",
        "eventname": event,
        "awsregion": "eu-west-1",
        "sourceipaddress": "203.0.113.7",
        "useragent": "APN/1.0 HashiCorp/1.0 Terraform/1.9.5 (+https://www.terraform.io)",
        "requestparameters": json.dumps({"instancesSet": items, "filterSet": {}}),
        "responseelements": json.dumps(
            {"requestId": f"{k:032x}", "reservationId": "r-0abc", "instancesSet": items}
        ),
        "eventid": f"{k:032x}",
        "readonly": "false",
        "recipientaccountid": "123456789012",
    }


def export(size: int, layout: str) -> Iterator[bytes]:
    """About ``size`` bytes of export, in CHUNK-sized pieces."""
    sent, k = 0, 0
    buf = bytearray(b"[" if layout == "array" else b"")
    while sent + len(buf) < size:
        line = json.dumps(record(k)).encode()
        buf += (b"," if layout == "array" and k else b"") + line + b"\n"
        k += 1
        if len(buf) >= CHUNK:
            sent += len(buf)
            yield bytes(buf)
            buf.clear()
    if layout == "array":
        buf += b"]"
    yield bytes(buf)


def read(chunks: Iterator[bytes]) -> tuple[int, int]:
    tally = FileTally("bench", "etag", None)
    n = 0
    for item in records(chunks, max_record=MB):
        tally.add(item.reason if isinstance(item, Skipped) else classify(item))
        n += 1
    return n, sum(tally.events.values())


def measure(size: int, layout: str) -> tuple[float, int, int]:
    # Generated before the clock and the tracing start: neither counts making the export.
    chunks = list(export(size, layout))
    started = time.perf_counter()
    n, _ = read(iter(chunks))
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    read(iter(chunks))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="16,64,256", help="export sizes in MB")
    ap.add_argument("--s3", action="store_true", help="also read them from moto's S3 server")
    args = ap.parse_args()
    sizes = [int(s) * MB for s in args.sizes.split(",")]
    print(
        f"{'layout':<7} {'size MB':>8} {'records':>9} {'read s':>7} {'MB/s':>6} "
        f"{'peak MB':>8} {'peak/size':>10}"
    )
    for layout in ("jsonl", "array"):
        for size in sizes:
            elapsed, peak, n = measure(size, layout)
            print(
                f"{layout:<7} {size / MB:>8.0f} {n:>9} {elapsed:>7.2f} "
                f"{size / MB / elapsed:>6.1f} {peak / MB:>8.2f} {peak / size:>10.4f}"
            )
    if args.s3:
        s3_bench(sizes)


def s3_bench(sizes: list[int]) -> None:
    import os

    from exporter.s3export import S3Export
    from tests.support.s3server import MotoS3

    with MotoS3() as s3:
        os.environ.update(s3.admin.env())
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        s3.client().create_bucket(Bucket="bench-exports")
        store = S3Export("bench-exports", "b/", endpoint_url=s3.url)
        print(f"\nfrom S3 (moto on loopback)\n{'size MB':>8} {'read s':>7} {'MB/s':>6}")
        for size in sizes:
            s3.client().put_object(
                Bucket="bench-exports", Key="b/export.jsonl", Body=b"".join(export(size, "jsonl"))
            )
            deadline = time.monotonic() + 3600
            (obj,) = store.list(deadline, 10)
            started = time.perf_counter()
            read(store.read(obj, deadline, CHUNK))
            elapsed = time.perf_counter() - started
            print(f"{size / MB:>8.0f} {elapsed:>7.2f} {size / MB / elapsed:>6.1f}")


if __name__ == "__main__":
    main()
