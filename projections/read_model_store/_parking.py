"""What every adapter shares about parked events: which ones a retry request marks."""

from __future__ import annotations

from collections.abc import Sequence

from projections.errors import ParkedEventNotFoundError

__all__ = ["retry_selection"]


def retry_selection(
    projection: str,
    parked: dict[int, tuple[str, int]],
    positions: Sequence[int] | None,
    keys: Sequence[str] | None,
) -> list[int]:
    """The parked positions a retry request marks: those asked for and the rest of their keys.

    ``parked`` maps each parked position to its (key, segment). Raises
    :class:`ParkedEventNotFoundError` for a position or key with no parked event.
    """
    if positions is None and keys is None:
        return sorted(parked)
    groups: set[tuple[str, int]] = set()
    for position in positions or ():
        if position not in parked:
            raise ParkedEventNotFoundError(projection, position)
        groups.add(parked[position])
    for key in keys or ():
        found = {group for group in parked.values() if group[0] == key}
        if not found:
            raise ParkedEventNotFoundError(projection, key=key)
        groups |= found
    return sorted(position for position, group in parked.items() if group in groups)
