"""Stop-sequence detection for providers that generate text themselves.

Text that could be the beginning of a stop sequence is held back until it is clear either way,
so a stream never shows the first half of ``^C^C`` and then retracts it.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopSequenceFilter:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.matched: str | None = None

    def feed(self, piece: str) -> str:
        """Add generated text; return the text that is now safe to show.

        After a match, ``matched`` is set and nothing more is returned.
        """
        if self.matched is not None:
            return ""
        buffer = self._pending + piece
        first: tuple[int, str] | None = None
        for stop in self._stops:
            index = buffer.find(stop)
            if index != -1 and (first is None or index < first[0]):
                first = (index, stop)
        if first is not None:
            self.matched = first[1]
            self._pending = ""
            return buffer[: first[0]]
        hold = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:length]):
                    hold = max(hold, length)
                    break
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """At the end of generation: release any held-back text."""
        rest, self._pending = self._pending, ""
        return rest
