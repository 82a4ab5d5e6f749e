"""Option parsing shared by the commands: comma lists of positive integers (``--seq-len 2048,8192``)."""

from __future__ import annotations


def int_list(option: str, raw: str) -> list[int]:
    """The positive integers of comma list ``raw``, duplicates dropped in order; ValueError naming ``option``
    for anything else, so each command can raise it as its own one-line usage error."""
    values = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise ValueError(f"{option}: {part!r} is not an integer") from None
        if n < 1:
            raise ValueError(f"{option}: {n} is not a positive integer")
        values.append(n)
    if not values:
        raise ValueError(f"{option}: give at least one value")
    return list(dict.fromkeys(values))
