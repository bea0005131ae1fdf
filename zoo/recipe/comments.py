"""The comment of every spec field, read from the class source: what ``zoo check`` prints next to each value.

A field's comment is the one at the end of its line (``lr: float = 0.01  # learning rate``) or, for a long one, the
comment lines right above it. The source is the documentation: there is no second copy to keep in step.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import tokenize

__all__ = ["field_comments"]


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field name: comment}`` of a spec class and the classes it inherits fields from (fields without a comment
    are left out)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_own_comments(klass))
    return comments


def _own_comments(cls: type) -> dict[str, str]:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # defined where no source is kept (an interactive session)
        return {}
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    comments: dict[str, str] = {}
    above: list[str] = []  # comment lines since the last statement
    line_comment: dict[int, str] = {}
    line_name: dict[int, str] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            line_comment[tok.start[0]] = tok.string.lstrip("#").strip()
        elif (tok.type == tokenize.NAME and tok.string in fields and i + 1 < len(tokens)
              and tokens[i + 1].string == ":" and tok.start[1] == 4):
            line_name[tok.start[0]] = tok.string
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if number in line_name:
            name = line_name[number]
            text = line_comment.get(number) if not stripped.startswith("#") else None
            comments[name] = text or " ".join(above)
            above = []
        elif stripped.startswith("#") and number in line_comment:
            above.append(line_comment[number])
        elif stripped:
            above = []
    return {name: text for name, text in comments.items() if text}
