"""Numbers read from environment variables. A value that is not one, or is out of range, is a
one-line `ConfigError` naming the variable, raised where the setting is read instead of a
`ValueError` from deep inside a run. The value itself is not quoted, as with every other input."""

from __future__ import annotations

import math
import os
from typing import TypeVar

from qa_lib.errors import ConfigError

Number = TypeVar("Number", int, float)


def parse_number(name: str, raw: str, kind: type[Number], minimum: Number, what: str) -> Number:
    """`raw` as `kind` (int: a whole number) at least `minimum`, or a `ConfigError` saying
    "`name` must be `what`"."""
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be {what}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be {what}")
    return value


def env_number(name: str, default: Number, minimum: Number, what: str) -> Number:
    """The variable `name` parsed as `parse_number` does (the kind of `default`); `default` when
    it is unset or empty."""
    raw = os.environ.get(name, "")
    return parse_number(name, raw, type(default), minimum, what) if raw.strip() else default
