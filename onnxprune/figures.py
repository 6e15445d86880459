"""How figures read in messages and tables."""

from __future__ import annotations


def distinct(values: list[float], least: int = 4, most: int = 10) -> list[str]:
    """The values with the fewest significant digits (``least`` to ``most``) that tell apart
    every two that differ (``1 -> 1 -> 1`` was 1 -> 0.99996 -> 0.99999)."""
    for digits in range(least, most + 1):
        text = [f"{v:.{digits}g}" for v in values]
        if all(text[i] != text[j] for i in range(len(values)) for j in range(i)
               if values[i] != values[j]):
            return text
    return [f"{v:.{most}g}" for v in values]
