"""The configuration reference (`docs/configuration.md`), rendered from `config.PipelineConfig`.

The pydantic model is the one source of every key, default, bound and description; the page is
generated from it so that it cannot drift (`tests/test_config.py` checks it is current).
Regenerate with `python -m qa_lib.config_reference > docs/configuration.md`.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from qa_lib.config import DataSource, PipelineConfig

_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in typing.get_args(annotation) if a is not type(None))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "data source (below)"
    if typing.get_origin(annotation) is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: list[Any]) -> str:
    found = [f"{sign} {getattr(m, key)}" for m in metadata for key, sign in _BOUNDS if hasattr(m, key)]
    return ", ".join(found)


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "empty" if not value else f"`{value}`"
    return "none" if field.default is None else f"`{str(field.default).lower() if isinstance(field.default, bool) else field.default}`"


def _table(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = ["| key | type | default | what |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        kind = _type(field.annotation)
        if bounds := _bounds(field.metadata):
            kind += f" ({bounds})"
        if type(None) in typing.get_args(field.annotation):
            kind += ", or none"
        what = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {kind} | {_default(field)} | {what} |")
    return rows


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from qa_lib/config.py by `python -m qa_lib.config_reference`; do not edit. -->",
        "",
        "Every key of a pipeline config (`qa_lib.config.PipelineConfig`), with its one default. A YAML",
        "file sets some of them; `key=value` arguments after it override (dotted for a data source's",
        "keys: `train_data.limit=500`); none is written `null`, in YAML and in an override alike. An",
        "unknown key, a value out of its bounds or of the wrong type fails at load, naming the key.",
        "",
        *_table(PipelineConfig),
        "",
        "## Data sources (`train_data`, `eval_data`)",
        "",
        "A source is a mapping of the keys below, or just its path: `eval_data: data/dev.json` (or the override",
        "`eval_data=data/dev.json`) is `eval_data: {path: data/dev.json}`, every other key at its default.",
        "",
        *_table(DataSource, prefix="<source>."),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
