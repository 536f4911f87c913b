"""What every store backend shares: entries, leases and the folder names that are not stages."""

from __future__ import annotations

from dataclasses import dataclass, field

# Top-level names a store uses for its own bookkeeping, never for a stage.
RESERVED = {"work", "locks", "refs", "prefect-results", "staging"}


@dataclass(frozen=True)
class Entry:
    stage: str
    key: str
    size: int
    created: float  # seconds since the epoch


@dataclass
class Lease:
    description: str
    lost: bool = field(default=False)  # set when a renewal found the lease taken over
