"""Bookmarks: node ids a researcher marked to come back to, per dialogue, for one session.

They are a navigation aid, not data, so they are not stored; the app holds them (they outlive
any one dialogue screen: closing a dialogue and opening it again keeps its bookmarks), and a
screen hosted by an app that holds none (a test host) keeps its own.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Bookmarks:
    """Bookmarked node ids by dialogue, each dialogue's in the order they were made."""

    def __init__(self) -> None:
        self._by_dialogue: dict[str, list[str]] = {}

    def of(self, dialogue_id: str) -> list[str]:
        """The dialogue's bookmarks (a copy), oldest first."""
        return list(self._by_dialogue.get(dialogue_id, ()))

    def toggle(self, dialogue_id: str, node_id: str) -> bool:
        """Bookmark ``node_id``, or remove its bookmark; whether it is bookmarked now."""
        marks = self._by_dialogue.setdefault(dialogue_id, [])
        if node_id in marks:
            marks.remove(node_id)
            return False
        marks.append(node_id)
        return True

    def after(self, dialogue_id: str, node_id: str | None) -> str | None:
        """The bookmark made after ``node_id``'s (cycling round), or the first one when
        ``node_id`` is not bookmarked; ``None`` when the dialogue has none."""
        marks = self._by_dialogue.get(dialogue_id, [])
        if not marks:
            return None
        return marks[(marks.index(node_id) + 1) % len(marks) if node_id in marks else 0]


@runtime_checkable
class HoldsBookmarks(Protocol):
    """An app that keeps bookmarks for its screens (``ClonechatApp``)."""

    bookmarks: Bookmarks
