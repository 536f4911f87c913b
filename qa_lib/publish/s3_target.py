"""An S3 target: `s3://bucket/prefix/runs/<run id>/...` and `s3://bucket/prefix/champion.json`.

Files go up through boto3's transfer manager (multipart above 8 MiB) with SHA-256 checksums and
are verified after upload; `manifest.json` goes last, so a run without it is incomplete. The
champion pointer is one conditional PUT (If-Match on the ETag read, or If-None-Match: * when
there was none), so of two publishers racing, one wins and the other is told.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

from qa_lib.publish.local import PointerChanged
from qa_lib.s3 import S3Prefix, StorageError, _cache_dir, explain, parse_uri
from qa_lib.hashing import sha256_file
from qa_lib.sizes import in_files

_log = logging.getLogger(__name__)
MULTIPART_THRESHOLD = 8 * 2**20


class S3Target(S3Prefix):
    def __init__(self, uri: str):
        super().__init__(uri)
        self.uri = self.base_uri

    def check(self) -> None:
        super().check()
        self.check_writable("this run could not publish")

    def read_pointer(self) -> tuple[dict | None, str | None]:
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._key("champion.json"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise explain(exc, self.uri) from None
        return json.loads(obj["Body"].read()), obj["ETag"]

    def run_location(self, run_id: str) -> str:
        return f"s3://{self.bucket}/{self._key('runs', run_id)}"

    def _upload(self, path: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        self.s3.upload_file(str(path), self.bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                            Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD))
        head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        if head["ContentLength"] != path.stat().st_size:
            raise OSError(f"s3://{self.bucket}/{key}: size mismatch after upload")
        stored = head.get("ChecksumSHA256")
        if stored and "-" not in stored:  # whole-object checksum (single part)
            ours = base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
            if stored != ours:
                raise OSError(f"s3://{self.bucket}/{key}: checksum mismatch after upload")

    def upload_run(self, folder: Path, run_id: str) -> str:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
        _log.info("uploading run %s to %s: %s", run_id, self.uri,
                  in_files([p.stat().st_size for p in [*files, folder / "manifest.json"]]))
        try:
            for p in files:
                self._upload(p, self._key("runs", run_id, str(p.relative_to(folder))))
            self._upload(folder / "manifest.json", self._key("runs", run_id, "manifest.json"))
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            from botocore.exceptions import ClientError, NoCredentialsError

            if isinstance(exc, (ClientError, NoCredentialsError)):
                raise explain(exc, self.uri) from None
            raise  # connection trouble: the task retries
        return self.run_location(run_id)

    def put_pointer(self, pointer: dict, expected: str | None) -> None:
        from botocore.exceptions import ClientError

        cond = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key("champion.json"),
                               Body=json.dumps(pointer, indent=2).encode(), ContentType="application/json", **cond)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                # botocore resends a PUT whose response was lost; the resend then fails its own
                # condition. If the pointer now holds ours, that first PUT succeeded.
                if self.read_pointer()[0] == pointer:
                    return
                raise PointerChanged(f"{self.uri}/champion.json changed since it was read; not promoting") from None
            raise explain(exc, self.uri) from None

    def local_model(self, pointer: dict) -> str:
        """Download the pointed-to run once (verified against its manifest); return its model folder."""
        bucket, run_prefix = parse_uri(pointer["location"])
        dest = _cache_dir() / "models" / bucket / run_prefix
        if (dest / ".complete").exists():
            return str(dest / "model")
        manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=f"{run_prefix}/manifest.json")["Body"].read())
        _log.info("downloading %s into %s: %s", pointer["location"], dest,
                  in_files([meta["size"] for meta in manifest["files"].values()]))
        for rel, meta in manifest["files"].items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(bucket, f"{run_prefix}/{rel}", str(target))
            if sha256_file(target) != meta["sha256"]:
                raise StorageError(f"{pointer['location']}/{rel}: checksum does not match the manifest")
        (dest / ".complete").write_text("")
        return str(dest / "model")
