"""Reading exports from S3 (or an S3-compatible store) with boto3, failures made typed.

boto3 is an optional dependency (``pip install 'spacelift-exporter[aws]'``): it is imported
only when an area that reads S3 is configured. Credentials come from boto3's standard chain
(environment, shared config and credentials files, an optional named profile, web identity,
container and instance roles); this module never sees or logs them.

Every failure becomes a ``SpaceliftError`` the pipeline knows, so the area is marked failed
with a readable message and the other areas carry on. ``ExportStoreError`` is not one of
``exporter.health.OUTAGE_KINDS``: a missing bucket says nothing about Spacelift's API, so
``spacelift_up`` stays as it is (the area's ``spacelift_poll_success`` goes to 0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from exporter.errors import PermissionDeniedError, SpaceliftError

LIST_PAGE = 1000  # ListObjectsV2's largest page


class ExportStoreError(SpaceliftError):
    """S3 could not be read: missing bucket, refused credentials, unreachable endpoint..."""

    kind = "export_store"


class ObjectChanged(Exception):
    """The object was deleted or replaced between the listing and the read: try next poll."""


class OutOfTime(Exception):
    """The poll's time budget ran out while reading."""


@dataclass(frozen=True)
class ObjectRef:
    key: str
    etag: str
    size: int
    modified: float  # unix time


def boto3_missing() -> str | None:
    """Why the AWS extra is unusable here, or None when boto3 imports."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "needs boto3: pip install 'spacelift-exporter[aws]'"
    return None


_REFUSED_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
_DENIED = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}


class S3Export:
    """Lists and streams the objects under ``s3://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        profile: str = "",
        endpoint_url: str = "",
        region: str = "",
        timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._profile = profile
        self._endpoint = endpoint_url
        self._region = region
        self._timeout = timeout
        self._retries = retries
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Export(s3://{self.bucket}/{self.prefix})"

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig
            from botocore.exceptions import BotoCoreError

            try:
                session = boto3.session.Session(
                    profile_name=self._profile or None, region_name=self._region or None
                )
                self._client = session.client(
                    "s3",
                    endpoint_url=self._endpoint or None,
                    # Without a region anywhere in the chain, sign for us-east-1 (S3 then
                    # redirects a bucket elsewhere; S3-compatible stores ignore it).
                    region_name=self._region or session.region_name or "us-east-1",
                    config=BotoConfig(
                        connect_timeout=self._timeout,
                        read_timeout=self._timeout,
                        retries={"total_max_attempts": self._retries + 1, "mode": "standard"},
                        user_agent_extra="spacelift-exporter",
                    ),
                )
            except BotoCoreError as exc:  # ProfileNotFound, a broken config file...
                raise ExportStoreError(f"cannot set up the S3 client: {exc}") from None
        return self._client

    def list(self, deadline: float, limit: int) -> list[ObjectRef]:
        """Every object under the prefix (at most ``limit``), as the listing shows it now."""
        out: list[ObjectRef] = []
        token: str | None = None
        while True:
            if time.monotonic() > deadline:
                raise ExportStoreError(
                    f"listing s3://{self.bucket}/{self.prefix} used up the poll's time budget"
                )
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": self.prefix,
                "MaxKeys": LIST_PAGE,
            }
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("ListObjectsV2", lambda kw=kwargs: self._s3().list_objects_v2(**kw))
            for item in page.get("Contents") or []:
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a "folder" placeholder
                out.append(
                    ObjectRef(
                        key=key,
                        etag=str(item.get("ETag", "")).strip('"'),
                        size=int(item.get("Size", 0)),
                        modified=item["LastModified"].timestamp(),
                    )
                )
                if len(out) > limit:
                    raise ExportStoreError(
                        f"more than {limit} objects under s3://{self.bucket}/{self.prefix}: "
                        "narrow the prefix, or expire read exports with a lifecycle rule"
                    )
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")

    def read(self, obj: ObjectRef, deadline: float, chunk: int) -> Iterator[bytes]:
        """The object's bytes in chunks, as listed (``IfMatch`` its ETag), within the budget."""
        from botocore.exceptions import BotoCoreError, ClientError

        def get() -> Any:
            try:
                return self._s3().get_object(Bucket=self.bucket, Key=obj.key, IfMatch=obj.etag)
            except ClientError as exc:
                code = _code(exc)
                if code in ("NoSuchKey", "PreconditionFailed", "412", "404"):
                    raise ObjectChanged(obj.key) from None
                raise

        body = self._call("GetObject", get)["Body"]
        try:
            for piece in body.iter_chunks(chunk):
                if time.monotonic() > deadline:
                    raise OutOfTime(obj.key)
                yield piece
        except (BotoCoreError, ClientError, OSError) as exc:
            raise ExportStoreError(
                f"reading s3://{self.bucket}/{obj.key} failed: {type(exc).__name__}"
            ) from None
        finally:
            body.close()

    def _call(self, operation: str, call: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        where = f"s3://{self.bucket}/{self.prefix}"
        try:
            return call()
        except ClientError as exc:
            code = _code(exc)
            if code == "NoSuchBucket":
                raise ExportStoreError(f"S3 bucket {self.bucket!r} does not exist") from None
            if code in _REFUSED_CREDENTIALS:
                raise ExportStoreError(
                    f"S3 refused the AWS credentials ({code}) for {where}"
                ) from None
            if code in _DENIED:
                raise PermissionDeniedError(
                    f"S3 {operation} on {where} denied: the AWS identity needs s3:ListBucket "
                    "on the bucket and s3:GetObject on the prefix"
                ) from None
            raise ExportStoreError(f"S3 {operation} on {where} failed: {code}") from None
        except NoCredentialsError:
            raise ExportStoreError(
                "no AWS credentials found (environment, shared files, profile or role)"
            ) from None
        except EndpointConnectionError:
            raise ExportStoreError(f"S3 endpoint unreachable for {where}") from None
        except BotoCoreError as exc:
            raise ExportStoreError(f"S3 {operation} on {where} failed: {exc}") from None


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
