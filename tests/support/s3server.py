"""A real S3 API on loopback: moto's server mode in a process of its own.

Started once per test module (it holds every bucket the module's tests make). It checks
signatures and IAM policies like AWS does: ``start`` creates an IAM user allowed everything
on S3 and IAM (``admin``) and one allowed nothing (``nobody``), then switches authentication
on, so wrong credentials are refused as AWS refuses them, and policies are enforced.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port
from tests.support.wait import until

REGION = "us-east-1"
ALLOW_ADMIN = (
    '{"Version":"2012-10-17","Statement":'
    '[{"Effect":"Allow","Action":["s3:*","iam:*"],"Resource":"*"}]}'
)


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


class MotoS3:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="moto-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = Keys("", "")
        self.nobody = Keys("", "")

    def start(self) -> MotoS3:
        with (self.dir / "output.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        until(lambda: httpx.get(self.url + "/moto-api/").status_code == 200, 30, what="moto")
        iam = self.client("iam", Keys("setup", "setup"))
        self.admin = self._user(iam, "admin", ALLOW_ADMIN)
        self.nobody = self._user(iam, "nobody", None)
        # From here on every request must be signed by a known key and allowed by its policy.
        httpx.post(self.url + "/moto-api/reset-auth", content=b"0").raise_for_status()
        return self

    def user(self, name: str, policy: str | None) -> Keys:
        """A new IAM user with this inline policy (JSON), and its access key."""
        return self._user(self.client("iam"), name, policy)

    def _user(self, iam: Any, name: str, policy: str | None) -> Keys:
        iam.create_user(UserName=name)
        if policy:
            iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=policy)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def client(self, service: str = "s3", keys: Keys | None = None) -> Any:
        import boto3

        keys = keys or self.admin
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=keys.access_key,
            aws_secret_access_key=keys.secret_key,
        )

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
