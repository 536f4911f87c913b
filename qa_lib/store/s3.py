"""A store on S3 (or any S3-compatible endpoint) that a fleet of workers shares.

Layout under `s3://bucket/prefix/`:
  <stage>/<key>/<attempt>/...   the files of one write attempt
  <stage>/<key>/_COMPLETE       JSON {attempt, files: {name: size}}, written last and only once
                                (If-None-Match: *): a reader trusts a stage by this marker alone
  work/<stage>/<key>/checkpoint-N/...  (+ its own _COMPLETE) training checkpoints
  locks/<stage>-<key>.json      the lease of whoever trains that key
  refs/<name>.json              keys that `store gc` keeps (the champion's model)

Attempts never share object names, so a writer that dies mid-upload leaves only unreferenced
objects, and two writers of one key cannot mix their files. Readers download a stage into a local
cache keyed by the stage key: the key is a content hash, so the cache is never stale. Transfers go
through boto3's transfer manager; botocore's retry mode handles drops, 500s and SlowDown.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Iterator

from qa_lib.env import env_number
from qa_lib.s3 import REFUSED_CODES, S3Prefix, StorageError, _cache_dir, check_cache_writable, explain
from qa_lib.errors import naming_full_disk
from qa_lib.sizes import in_files
from qa_lib.store.base import RESERVED, Entry, Lease

_log = logging.getLogger(__name__)

MARKER = "_COMPLETE"
# A lease not renewed for LEASE_TTL_S seconds (by the S3 server's clock) is free to take over;
# its holder renews it every LEASE_TTL_S / 4.
LEASE_TTL_S = env_number("QA_PIPELINE_LEASE_TTL", 120.0, 1.0, "a number of seconds, 1 or more")
_PRECONDITION = ("PreconditionFailed", "412", "ConditionalRequestConflict")
_MISSING = ("NoSuchKey", "404", "NotFound")


def _code(exc) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


class S3Store(S3Prefix):
    remote = True

    def __init__(self, uri: str, cache_dir: str | Path | None = None):
        super().__init__(uri)
        self.location = self.base_uri
        # This worker's own copies: downloaded stages, and training's local checkpoint folder.
        self.local_root = Path(cache_dir or _cache_dir())
        self.cache = self.local_root / "stages" / self.bucket / self.prefix
        self.downloaded = 0
        self.uploaded = 0
        self.io_s = 0.0  # seconds spent in S3 transfers and requests: the store's own overhead

    def uri(self, stage: str, key: str) -> str:
        return f"{self.location}/{stage}/{key}"

    def check(self, cache: bool = True) -> None:
        """The bucket, and (unless only listing) this worker's local cache, where stages are computed."""
        super().check()
        if cache:
            check_cache_writable(self.local_root)
            self.check_writable("this run could not store its stages")

    # -- objects -------------------------------------------------------------------------------
    def _get_json(self, key: str) -> tuple[dict | None, dict]:
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None, {}
            raise explain(exc, self.location) from None
        return json.loads(obj["Body"].read()), obj

    def _put_once(self, key: str, body: dict) -> dict | None:
        """Create `key` unless it exists; return the existing body when another writer was first.

        botocore resends a PUT whose response was lost, and the resend fails its own condition:
        a body equal to ours is then our own write.
        """
        from botocore.exceptions import ClientError

        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(body).encode(), IfNoneMatch="*")
            return None
        except ClientError as exc:
            if _code(exc) not in _PRECONDITION:
                raise explain(exc, self.location) from None
        existing, _ = self._get_json(key)
        return None if existing == body else existing

    def _upload_tree(self, folder: Path, prefix: str, what: str) -> dict[str, int]:
        t = time.perf_counter()
        files = {}
        sizes = {p: p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
        # Said before, not after: a model's transfer can take minutes with nothing else to show.
        _log.info("uploading %s to %s: %s", what, self.location, in_files(list(sizes.values())))
        for path, size in sizes.items():
            rel = path.relative_to(folder).as_posix()
            try:
                self.s3.upload_file(str(path), self.bucket, f"{prefix}/{rel}")
            except Exception as exc:
                # Refused (credentials or policy changed mid-run): one line, not retried. Anything
                # else botocore has already retried, and the task may retry once more.
                inner = exc.__cause__ or exc.__context__ or exc
                if _code(inner) in REFUSED_CODES:
                    raise explain(inner, self.location) from None
                raise
            files[rel] = size
        self.uploaded += sum(files.values())
        self.io_s += time.perf_counter() - t
        return files

    def _download_tree(self, prefix: str, files: dict[str, int], dest: Path, what: str) -> int:
        """Download exactly the files a marker lists into `dest` (renamed into place when whole)."""
        _log.info("downloading %s from %s: %s", what, self.location, in_files(list(files.values())))
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
        total, t = 0, time.perf_counter()
        try:
            with naming_full_disk(f"the {self.location} store's local cache {self.cache}"):
                for rel, size in files.items():
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.s3.download_file(self.bucket, f"{prefix}/{rel}", str(target))
                    if target.stat().st_size != size:
                        raise StorageError(f"{self.location}/{prefix}/{rel}: size differs from its completion marker")
                    total += size
                tmp.mkdir(parents=True, exist_ok=True)
                (tmp / MARKER).write_text("")
            if dest.exists():
                shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            self.io_s += time.perf_counter() - t
        return total

    def _objects(self, prefix: str) -> Iterator[dict]:
        """Every object whose key starts with `prefix`, page after page."""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def _delete_prefix(self, prefix: str) -> None:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:  # one delete request per listed page (up to 1,000 keys)
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    # -- stages --------------------------------------------------------------------------------
    def has(self, stage: str, key: str) -> bool:
        """Whether the shared store holds the stage (not this worker's cache: an entry removed from
        the store is recomputed, and so uploaded again for the other workers)."""
        from botocore.exceptions import ClientError

        t = time.perf_counter()
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(stage, key, MARKER))
            return True
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise explain(exc, self.location) from None
        finally:
            self.io_s += time.perf_counter() - t

    def fetch(self, stage: str, key: str) -> Path:
        """The stage's files in the local cache, downloaded on first use."""
        local = self.cache / stage / key
        if (local / MARKER).exists():
            (local / MARKER).touch()  # its last use, which `sweep_cache` goes by
            return local
        marker, _ = self._get_json(self._key(stage, key, MARKER))
        if marker is None:
            raise StorageError(f"{self.uri(stage, key)}: not in the store (no completion marker)")
        local.parent.mkdir(parents=True, exist_ok=True)
        self.downloaded += self._download_tree(self._key(stage, key, marker["attempt"]), marker["files"], local,
                                               f"{stage}/{key}")
        return local

    @contextmanager
    def writing(self, stage: str, key: str) -> Iterator[Path]:
        """Yield a local staging folder; on success its files go up, then the marker, last."""
        local = self.cache / stage / key
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        try:
            with naming_full_disk(f"the {self.location} store's local cache {self.cache}"):
                yield tmp
            if self.has(stage, key):
                return  # a concurrent writer finished first: same key, same content
            attempt = uuid.uuid4().hex[:12]
            files = self._upload_tree(tmp, self._key(stage, key, attempt), f"{stage}/{key}")
            winner = self._put_once(self._key(stage, key, MARKER), {"attempt": attempt, "files": files})
            if winner is not None:
                self._delete_prefix(self._key(stage, key, attempt))
                return
            (tmp / MARKER).write_text("")
            if not (local / MARKER).exists():
                shutil.rmtree(local, ignore_errors=True)
                os.replace(tmp, local)  # the writer reads its own output without downloading it
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def sweep_cache(self, unused_for_s: float, dry_run: bool = False) -> list[Entry]:
        """This worker's copies of stages not used for `unused_for_s` seconds, removed (or only
        listed): a long-lived worker downloads every new model and feature set, and nothing else
        ever removes them. A copy is content-addressed, so a later run that needs it downloads it
        again. Downloads or staging folders cut off by a killed process go once as old."""
        cutoff = time.time() - unused_for_s
        swept: list[Entry] = []
        for folder in sorted(self.cache.glob("*/*")):
            if not folder.is_dir():
                continue
            marker = folder / MARKER
            used = (marker if marker.exists() else folder).stat().st_mtime
            if used >= cutoff:
                continue
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            swept.append(Entry(folder.parent.name, folder.name, size, used))
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
        return swept

    # -- resumable work ------------------------------------------------------------------------
    def work_dir(self, stage: str, key: str) -> Path:
        path = self.local_root / "work" / self.bucket / self.prefix / stage / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _checkpoints(self, stage: str, key: str) -> list[tuple[int, str]]:
        prefix = self._key("work", stage, key) + "/"
        found = []
        for obj in self._objects(prefix):
            name, _, rest = obj["Key"][len(prefix):].partition("/")
            if rest == MARKER and name.startswith("checkpoint-") and name[11:].isdigit():
                found.append((int(name[11:]), name))
        return sorted(found)

    def save_checkpoint(self, stage: str, key: str, checkpoint: Path) -> None:
        """Upload a saved checkpoint, mark it complete, then drop the older ones."""
        prefix = self._key("work", stage, key, checkpoint.name)
        # Training waits for it: weights and optimizer state, about three times the model.
        files = self._upload_tree(checkpoint, prefix, f"{checkpoint.name} of {stage}/{key}")
        self.s3.put_object(Bucket=self.bucket, Key=f"{prefix}/{MARKER}", Body=json.dumps({"files": files}).encode())
        for _, name in self._checkpoints(stage, key):
            if name != checkpoint.name:
                self.s3.delete_object(Bucket=self.bucket, Key=self._key("work", stage, key, name, MARKER))
                self._delete_prefix(self._key("work", stage, key, name))

    def restore_checkpoint(self, stage: str, key: str, local_dir: Path) -> str | None:
        """Download the newest complete checkpoint into `local_dir` (unless it is there); its name."""
        found = self._checkpoints(stage, key)
        if not found:
            return None
        _, name = found[-1]
        dest = Path(local_dir) / name
        if not (dest / MARKER).exists():
            marker, _ = self._get_json(self._key("work", stage, key, name, MARKER))
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.downloaded += self._download_tree(self._key("work", stage, key, name), marker["files"], dest,
                                                   f"{name} of {stage}/{key}")
            (dest / MARKER).unlink(missing_ok=True)  # transformers reads the folder as a checkpoint
        return name

    def clear_checkpoints(self, stage: str, key: str) -> None:
        self._delete_prefix(self._key("work", stage, key))
        shutil.rmtree(self.work_dir(stage, key) / "checkpoints", ignore_errors=True)

    # -- the lease -----------------------------------------------------------------------------
    @contextmanager
    def lease(self, stage: str, key: str, poll_s: float = 2.0) -> Iterator[Lease]:
        """Hold `locks/<stage>-<key>.json` while working: taken with If-None-Match, renewed with
        If-Match every LEASE_TTL_S / 4, and taken over (If-Match on the stale ETag) once its
        holder has not renewed it for LEASE_TTL_S by the server's clock: a dead holder frees it."""
        lock_key = self._key("locks", f"{stage}-{key}.json")
        owner = {"owner": uuid.uuid4().hex, "host": os.uname().nodename, "pid": os.getpid(), "ttl_s": LEASE_TTL_S}
        etag = self._take(lock_key, owner, poll_s)
        lease = Lease(description=f"lease {self.location}/locks/{stage}-{key}.json")
        stop = threading.Event()

        def renew():
            nonlocal etag
            renewal = 0
            while not stop.wait(LEASE_TTL_S / 4):
                # A new body each time, so each renewal gets a new ETag: a taker's If-Match on the ETag
                # it judged stale then fails if the holder renewed in between.
                renewal += 1
                body = json.dumps({**owner, "renewal": renewal}).encode()
                try:
                    etag = self.s3.put_object(Bucket=self.bucket, Key=lock_key, Body=body, IfMatch=etag)["ETag"]
                except Exception as exc:  # noqa: BLE001
                    if _code(exc) in _PRECONDITION:
                        try:
                            held, obj = self._get_json(lock_key)
                        except Exception:  # noqa: BLE001 - unreadable now: decide at the next renewal
                            continue
                        if held and held.get("owner") == owner["owner"]:  # ours: landed, response lost, resent
                            etag = obj["ETag"]
                            continue
                    if _code(exc) in _PRECONDITION + _MISSING:
                        lease.lost = True
                        _log.warning("%s was taken over: this worker stalled past %.0f s", lease.description,
                                     LEASE_TTL_S)
                        return
                    # a transient failure: the next renewal tries again, well within the TTL

        # In a copy of this context, where log handlers find the run: its warning belongs in the run's log.
        thread = threading.Thread(target=contextvars.copy_context().run, args=(renew,), daemon=True, name="qa-lease")
        thread.start()
        try:
            yield lease
        finally:
            stop.set()
            thread.join()
            if not lease.lost:
                self.s3.delete_object(Bucket=self.bucket, Key=lock_key)

    def _take(self, lock_key: str, owner: dict, poll_s: float) -> str:
        from botocore.exceptions import ClientError

        body = json.dumps(owner).encode()
        while True:
            try:
                return self.s3.put_object(Bucket=self.bucket, Key=lock_key, Body=body, IfNoneMatch="*")["ETag"]
            except ClientError as exc:
                if _code(exc) not in _PRECONDITION:
                    raise explain(exc, self.location) from None
            held, obj = self._get_json(lock_key)
            if held and held.get("owner") == owner["owner"]:  # our own create or takeover, its response lost
                return obj["ETag"]
            if held is not None and self._age(obj) > LEASE_TTL_S:
                try:
                    etag = self.s3.put_object(Bucket=self.bucket, Key=lock_key, Body=body, IfMatch=obj["ETag"])["ETag"]
                    _log.warning("took over the lease of %s (pid %s), silent for over %.0f s", held.get("host"),
                                 held.get("pid"), LEASE_TTL_S)
                    return etag
                except ClientError as exc:
                    if _code(exc) not in _PRECONDITION + _MISSING:
                        raise explain(exc, self.location) from None
            time.sleep(poll_s)

    @staticmethod
    def _age(obj: dict) -> float:
        """Seconds since the object was written, by the server's clock (workers' clocks may differ)."""
        date = obj.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        return now - obj["LastModified"].timestamp()

    def leased(self) -> set[tuple[str, str]]:
        held = set()
        for obj in self._objects(self._key("locks") + "/"):
            name = obj["Key"].rsplit("/", 1)[-1].removesuffix(".json")
            _, head = self._get_json(obj["Key"])
            if head and self._age(head) <= LEASE_TTL_S:
                stage, _, key = name.partition("-")
                held.add((stage, key))
        return held

    # -- housekeeping --------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        out = []
        base = self._key() + "/" if self.prefix else ""
        for obj in self._objects(base):
            parts = obj["Key"][len(base):].split("/")
            if len(parts) == 3 and parts[2] == MARKER and parts[0] not in RESERVED:
                marker, _ = self._get_json(obj["Key"])
                size = sum((marker or {}).get("files", {}).values())
                out.append(Entry(parts[0], parts[1], size, obj["LastModified"].timestamp()))
        return sorted(out, key=lambda e: (e.stage, e.key))

    def orphans(self, before: float) -> list[Entry]:
        """Upload attempts that no completion marker names (a writer died, or lost a race), last
        written before `before`. Reported as entries whose key is `<key>/<attempt>`."""
        base = self._key() + "/" if self.prefix else ""
        attempts: dict[tuple[str, str, str], list] = {}
        markers: dict[tuple[str, str], str] = {}
        for obj in self._objects(base):
            parts = obj["Key"][len(base):].split("/")
            if len(parts) < 3 or parts[0] in RESERVED:
                continue
            if len(parts) == 3 and parts[2] == MARKER:
                marker, _ = self._get_json(obj["Key"])
                markers[(parts[0], parts[1])] = (marker or {}).get("attempt", "")
            else:
                attempts.setdefault((parts[0], parts[1], parts[2]), []).append(obj)
        out = []
        for (stage, key, attempt), objs in sorted(attempts.items()):
            newest = max(o["LastModified"].timestamp() for o in objs)
            if markers.get((stage, key)) != attempt and newest < before:
                out.append(Entry(stage, f"{key}/{attempt}", sum(o["Size"] for o in objs), newest))
        return out

    def remove_orphan(self, entry: Entry) -> None:
        self._delete_prefix(self._key(entry.stage, entry.key))

    def remove(self, stage: str, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(stage, key, MARKER))  # readers stop trusting it first
        self._delete_prefix(self._key(stage, key))
        shutil.rmtree(self.cache / stage / key, ignore_errors=True)

    def pin(self, name: str, keys: list[tuple[str, str]]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key("refs", f"{name}.json"),
                           Body=json.dumps({"keys": keys, "time": time.time()}).encode())

    def pinned(self) -> set[tuple[str, str]]:
        keys = set()
        for obj in self._objects(self._key("refs") + "/"):
            ref, _ = self._get_json(obj["Key"])
            keys |= {tuple(k) for k in (ref or {}).get("keys", [])}
        return keys
