"""Prefect's cache records beside a shared store, so a cache hit on one worker is one on all.

Prefect reads and writes result records through a `WritableFileSystem` block; this one keeps them
under `<store>/prefect-results/` with the store's own S3 client (one endpoint, one credential
chain, botocore's retries). A local store keeps Prefect's default local result storage.
"""

from __future__ import annotations

import functools

import anyio.to_thread
from prefect.filesystems import WritableFileSystem

from qa_lib.hashing import hash_json
from qa_lib.store import S3Store, Store


class StoreResultStorage(WritableFileSystem):
    """Result records as objects under `<location>/prefect-results/` (an s3:// store)."""

    _block_type_name = "QA Pipeline Store Results"
    location: str

    @property
    def _store(self) -> S3Store:
        return _s3_store(self.location)

    def read_path(self, path: str, **_) -> bytes:
        store = self._store
        return store.s3.get_object(Bucket=store.bucket, Key=store._key("prefect-results", path))["Body"].read()

    def write_path(self, path: str, content: bytes, **_) -> str:
        store = self._store
        store.s3.put_object(Bucket=store.bucket, Key=store._key("prefect-results", path), Body=content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await anyio.to_thread.run_sync(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await anyio.to_thread.run_sync(self.write_path, path, content)


@functools.lru_cache(maxsize=4)
def _s3_store(location: str) -> S3Store:
    return S3Store(location)


@functools.lru_cache(maxsize=4)
def _storage(location: str) -> StoreResultStorage:
    # Prefect wants result storage saved server-side, so any worker can load it by reference; the
    # block holds the store's location only (credentials come from each worker's environment).
    block = StoreResultStorage(location=location)
    block.save("qa-store-" + hash_json(location)[:16], overwrite=True)
    return block


def result_storage_for(store: Store) -> StoreResultStorage | None:
    return _storage(store.location) if isinstance(store, S3Store) else None
