"""Errors the user can act on. Each names the problem and where it is."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A library's error as one line for a message: its first line, cut at `limit` characters."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


class QAPipelineError(Exception):
    """Base class: a deterministic failure that retrying will not fix."""


class ConfigError(QAPipelineError):
    pass


class DataError(QAPipelineError):
    """A data source that cannot be read or does not hold valid QA examples."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
            return
        # The first line stands alone (the CLI prints only it); the list follows for the log.
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {len(problems)} problems, the first: {problems[0]}\n  " + "\n  ".join(shown)
                         + more)


class ModelError(QAPipelineError):
    pass
