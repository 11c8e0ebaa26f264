"""Reasoning sent inline as ``<think>...</think>`` at the start of the content.

Some servers (a plain llama.cpp or an OpenAI-compatible proxy in front of DeepSeek-R1 or Qwen3
without a reasoning parser) put the model's reasoning in the content itself. With the model
option ``think_tags = true`` the block is split off as it streams: the answer the partner sees
is what follows ``</think>``, and the reasoning is kept apart. Only a block that opens the
message counts (after leading whitespace): ``<think>`` later in a message is part of what the
model said. A block never closed is all reasoning (the model ran out of tokens thinking). A closing tag
with no opening one (templates that put ``<think>`` in the prompt, as DeepSeek-R1's does) ends
reasoning that began with the message: so a message that does not open with ``<think>`` is
held back until ``</think>`` or the end of the stream decides which it was. Tags split across
stream chunks are held back until they are clear either way.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ThinkTagSplitter:
    """Feed content pieces; get back (reasoning, answer) pieces safe to pass on."""

    def __init__(self) -> None:
        #: "start": before any non-space text; "thinking": inside the block; "answer": after it.
        self._state = "start"
        self._pending = ""
        #: Whether the message opened with a reasoning block.
        self.thought = False

    def feed(self, piece: str) -> tuple[str, str]:
        buffer = self._pending + piece
        self._pending = ""
        reasoning, answer = "", ""
        if self._state == "start":
            stripped = buffer.lstrip()
            if not stripped or OPEN.startswith(stripped):
                self._pending = buffer  # could still become "<think>"
                return "", ""
            if stripped.startswith(OPEN):
                self._state, self.thought = "thinking", True
                buffer = stripped[len(OPEN) :]
            else:
                self._state = "undecided"
        if self._state == "undecided":
            # No opening tag: templates that put "<think>" in the prompt send only the closing
            # one, so hold the text until "</think>" (it was reasoning) or the end (the answer).
            end = buffer.find(CLOSE)
            if end == -1:
                self._pending = buffer
                return "", ""
            if OPEN in buffer[:end]:
                self._state = "answer"  # tags inside what the model said, not a reasoning block
                return "", buffer
            self._state, self.thought = "thinking", True
        if self._state == "thinking":
            end = buffer.find(CLOSE)
            if end == -1:
                hold = _partial_suffix(buffer, CLOSE)
                self._pending = buffer[len(buffer) - hold :] if hold else ""
                return buffer[: len(buffer) - hold], ""
            reasoning, buffer = buffer[:end], buffer[end + len(CLOSE) :].lstrip("\n")
            self._state = "answer-start"
        if self._state == "answer-start":
            buffer = buffer.lstrip()
            if not buffer:
                return reasoning, ""
            self._state = "answer"
        answer = buffer
        return reasoning, answer

    def flush(self) -> tuple[str, str]:
        """At the end of the stream: what was held back."""
        rest, self._pending = self._pending, ""
        if self._state == "thinking":
            return rest, ""
        return "", rest.strip() if self._state == "start" else rest


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that begins ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


def split_think_tags(text: str) -> tuple[str | None, str]:
    """A whole (non-streamed) message as (reasoning or None, answer)."""
    splitter = ThinkTagSplitter()
    reasoning, answer = splitter.feed(text)
    more_reasoning, more_answer = splitter.flush()
    return (reasoning + more_reasoning if splitter.thought else None), answer + more_answer
