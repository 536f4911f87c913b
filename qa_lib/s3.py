"""S3 access with one set of client settings: endpoint from QA_S3_ENDPOINT_URL / AWS_ENDPOINT_URL,
credentials from the standard AWS chain (env, profile, instance role). Secrets are never logged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from qa_lib.errors import StorageError


def parse_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise StorageError(f"not an s3:// URI: {uri!r}")
    rest = uri[5:]
    bucket, _, key = rest.partition("/")
    if not bucket or any(c in bucket for c in " _!?*") or bucket != bucket.lower():
        raise StorageError(f"malformed S3 URI {uri!r}: bucket name {bucket!r} is not valid")
    return bucket, key.strip("/")


DEFAULT_ATTEMPTS = 9  # the first and 8 retries, adaptive: rides out throttling and a flaky link


def client():
    import boto3
    import botocore.session
    from botocore.config import Config

    endpoint = os.environ.get("QA_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    # A fresh session each time: boto3's default session caches credentials for the process.
    core = botocore.session.get_session()
    config = Config(retries={"total_max_attempts": _attempts(core), "mode": "adaptive"}, connect_timeout=5,
                    read_timeout=60, request_checksum_calculation="when_supported")
    return boto3.session.Session(botocore_session=core).client(
        "s3", endpoint_url=endpoint, config=config, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def _attempts(core) -> int:
    """AWS_MAX_ATTEMPTS or the profile's `max_attempts` (total attempts), as in any AWS tool: a
    Config in code would override them, so they are read here. A preflight against an endpoint
    that refuses connections takes 6 to 10 s with the default; `AWS_MAX_ATTEMPTS=1` fails at once."""
    try:
        attempts = core.get_config_variable("max_attempts")
    except ValueError:
        attempts = 0
    if attempts is None:
        return DEFAULT_ATTEMPTS
    if attempts < 1:
        raise StorageError("AWS_MAX_ATTEMPTS (or max_attempts in the AWS config) must be a whole number of at least 1")
    return attempts


class S3Prefix:
    """A bucket and key prefix (`s3://bucket/prefix`) with one client, made on first use."""

    def __init__(self, uri: str):
        self.base_uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_uri(self.base_uri)
        self._client = None

    @property
    def s3(self):
        if self._client is None:
            self._client = client()
        return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def check(self) -> None:
        """Fail early, in one line, on a bucket that is missing or not ours to use."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001
            raise explain(exc, self.base_uri) from None

    def check_writable(self, consequence: str) -> None:
        """Write an empty test object under the prefix and remove it: read-only credentials pass a
        HEAD request and would otherwise fail only at the first write, after `consequence`."""
        import uuid

        probe = self._key(f".write-check-{uuid.uuid4().hex[:12]}")
        try:
            self.s3.put_object(Bucket=self.bucket, Key=probe, Body=b"")
        except Exception as exc:  # noqa: BLE001 - explain() names what went wrong, without secrets
            raise StorageError(f"{explain(exc, self.base_uri)}, writing a test object: {consequence}") from None
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=probe)
        except Exception:  # noqa: BLE001 - a prefix that takes writes but not deletes keeps one empty object
            pass


# S3's answers that mean "not with these credentials": retrying cannot help.
REFUSED_CODES = ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch")


def explain(exc: Exception, uri: str) -> StorageError:
    """A one-line, secret-free reason for an S3 failure."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from qa_lib.errors import is_disk_full

    if isinstance(exc, StorageError):  # already says what is wrong (a retry setting)
        return StorageError(f"{uri}: {exc}")
    if is_disk_full(exc):  # a download into this worker's cache, not the bucket
        return StorageError(f"{uri}: no space left on device in the local cache {_cache_dir()}")

    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{uri}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    if isinstance(exc, EndpointConnectionError):
        return StorageError(f"{uri}: S3 endpoint unreachable ({shown_url(exc.kwargs.get('endpoint_url', 'endpoint'))})")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        if code in ("NoSuchBucket", "404"):
            return StorageError(f"{uri}: bucket does not exist")
        if code in REFUSED_CODES:
            return StorageError(f"{uri}: access denied ({code})")
        return StorageError(f"{uri}: S3 error {code}")
    return StorageError(f"{uri}: {type(exc).__name__}")


def shown_url(url: str) -> str:
    """`url` fit for a message: without the user:password@ an endpoint may carry, or a query string
    (a proxy's token)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _cache_dir() -> Path:
    return Path(os.environ.get("QA_PIPELINE_CACHE", Path.home() / ".cache" / "qa-pipeline"))


def check_cache_writable(root: Path | None = None) -> None:
    """This worker's local cache (where s3 stages, data and models are downloaded and computed) can be
    written: a read-only home in a hardened pod otherwise failed the first stage, three times over."""
    from qa_lib.folders import write_problem

    root = Path(root or _cache_dir())
    if problem := write_problem(root):
        raise StorageError(f"local cache {root}: cannot write there ({problem}); set QA_PIPELINE_CACHE to a writable "
                           "folder")


def object_fingerprint(uri: str) -> str:
    """The object's ETag and size; a missing object or bucket is one `StorageError` naming which."""
    from botocore.exceptions import ClientError

    bucket, key = parse_uri(uri)
    s3 = client()
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        # A HEAD has no body: a missing key and a missing bucket both come back as a bare 404.
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            try:
                s3.head_bucket(Bucket=bucket)
            except Exception as bucket_exc:  # noqa: BLE001
                raise explain(bucket_exc, uri) from None
            raise StorageError(f"{uri}: no such object in bucket {bucket}") from None
        raise explain(exc, uri) from None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, uri) from None
    return f"s3:{bucket}/{key}:{head['ETag']}:{head['ContentLength']}"


def object_key(uri: str) -> tuple[str, str]:
    """(bucket, key) of an object URI; a URI without a key (`s3://bucket`) names no object."""
    bucket, key = parse_uri(uri)
    if not key or uri.endswith("/"):
        raise StorageError(f"{uri}: names no object (give s3://bucket/path/name.json)")
    return bucket, key


def put_text(uri: str, text: str, content_type: str = "application/json") -> None:
    """`text` as the object `uri`, UTF-8. One PUT: readers see the old object or all of the new one."""
    bucket, key = object_key(uri)
    try:
        client().put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type)
    except Exception as exc:  # noqa: BLE001 - explain() names what went wrong, without secrets
        raise explain(exc, uri) from None


def download_source(uri: str) -> Path:
    """Download one data object into the local cache (keyed by its ETag) and return the path."""
    bucket, key = parse_uri(uri)
    fp = hashlib.sha256(object_fingerprint(uri).encode()).hexdigest()[:16]
    dest = _cache_dir() / "data" / fp / Path(key).name
    if not dest.exists():
        import uuid

        dest.parent.mkdir(parents=True, exist_ok=True)
        # Its own name per download: two runs on one machine fetching the same object must not write
        # into one file, and a failed download leaves nothing behind in the cache.
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            client().download_file(bucket, key, str(tmp))
            os.replace(tmp, dest)
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise explain(exc, uri) from None
    return dest


def download_model(uri: str) -> Path:
    """`s3://bucket/prefix/champion` → the champion's model folder, downloaded once; a store's
    `s3://bucket/prefix/model/<key>[/model]` → that trained model, from the store's local cache.

    No credentials, a missing bucket or an unreachable endpoint is one `StorageError` naming the
    URI: this runs in preflight and in `answer`, before anything else could report it."""
    from botocore.exceptions import BotoCoreError, ClientError

    from qa_lib.errors import is_disk_full

    try:
        return _download_model(uri)
    except (BotoCoreError, ClientError) as exc:
        raise explain(exc, uri) from None
    except OSError as exc:
        if is_disk_full(exc):
            raise explain(exc, uri) from None
        raise


def _download_model(uri: str) -> Path:
    import re

    if m := re.fullmatch(r"(s3://.+)/model/([0-9a-f]{24})(/model)?/?", uri):
        from qa_lib.store import open_store

        return open_store(m[1]).fetch("model", m[2]) / "model"
    from qa_lib.publish.s3_target import S3Target

    base = uri[: -len("/champion")] if uri.rstrip("/").endswith("/champion") else uri
    target = S3Target(base)
    pointer, _ = target.read_pointer()
    if pointer is None:
        raise StorageError(f"{uri}: no champion.json under {base}")
    return Path(target.local_model(pointer))
