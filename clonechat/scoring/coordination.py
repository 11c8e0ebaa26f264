"""Schelling coordination tasks: the question file, and reading an answer out of free text.

Both agents answer the same question independently; they coordinate when their answers match.
Matching is done on a normalised answer (the number, the option, the word), because a model
that writes "I pick 42." means the same as one that writes "42": comparing raw text would
count formatting, not coordination. A task file in ``prompts/coordination/`` declares how its
answer is read::

    answer = "integer"     # first whole number in [min, max]
    answer = "option"      # first of `options` mentioned (as a whole word)
    answer = "word"        # first word
    answer = "phrase"      # first line, without articles and punctuation (a city: "New York")
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from typing import Literal

from clonechat.errors import ClonechatError, TemplateError
from clonechat.prompts import PromptLibrary, PromptTemplate

AnswerKind = Literal["integer", "option", "word", "phrase"]
ANSWER_KINDS: tuple[AnswerKind, ...] = ("integer", "option", "word", "phrase")
KIND = "coordination"
PHASES = ("before", "after")
#: The score row that keeps each coordination node's normalised answer (``detail.answer``),
#: so SQL (the ``v_coordination`` view) can compare answers without knowing the tasks' rules.
ANSWER_SCORER = "answer"
ANSWER_VERSION = "1"


@dataclass(frozen=True)
class CoordinationTask:
    name: str
    template: PromptTemplate
    answer: AnswerKind
    options: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def normalise(self, text: str) -> str:
        """The answer in ``text`` in canonical form, or "" when there is none to read."""
        return normalise_answer(self, text)


def load_task(library: PromptLibrary, name: str, kind: str = KIND) -> CoordinationTask:
    """A coordination task by name (or another template of ``kind`` whose answer is read by
    the same rules: a recognition question); the error names the file and what is wrong."""
    template = library.get(kind, name)
    data = tomllib.loads(template.path.read_text(encoding="utf-8"))
    answer = data.get("answer", "phrase")
    if answer not in ANSWER_KINDS:
        raise TemplateError(f"{template.path}: answer must be one of {', '.join(ANSWER_KINDS)} (got {answer!r})")
    options = data.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) and o for o in options):
        raise TemplateError(f"{template.path}: options must be a list of words")
    if answer == "option" and not options:
        raise TemplateError(f"{template.path}: answer = 'option' needs a list of options")
    minimum, maximum = data.get("min"), data.get("max")
    for key, value in (("min", minimum), ("max", maximum)):
        if value is not None and not isinstance(value, int):
            raise TemplateError(f"{template.path}: {key} must be a whole number")
    return CoordinationTask(name, template, answer, tuple(_canonical(o) for o in options), minimum, maximum)


def _canonical(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s-]", " ", text)
    return " ".join(text.split())


_ARTICLES = re.compile(r"^(the|a|an)\s+")


def normalise_answer(task: CoordinationTask, text: str) -> str:
    if task.answer == "integer":
        for match in re.finditer(r"-?\d+", text):
            value = int(match.group())
            if (task.minimum is None or value >= task.minimum) and (task.maximum is None or value <= task.maximum):
                return str(value)
        return ""
    canonical = _canonical(text)
    if task.answer == "option":
        words = canonical.split()
        for word in words:
            if word in task.options:
                return word
        return ""
    if task.answer == "word":
        words = [w for w in canonical.split() if not _ARTICLES.match(w + " ")]
        return words[0] if words else ""
    first_line = next((line for line in text.strip().splitlines() if line.strip()), "")
    phrase = _ARTICLES.sub("", _canonical(first_line))
    return phrase[:60]


class AnswerReader:
    """Reads coordination answers by their task's rule, loading each task file once. A task
    whose file is gone (renamed since the run) compares answers as written, case and spacing
    folded, rather than failing a whole report."""

    def __init__(self, library: PromptLibrary) -> None:
        self.library = library
        self._tasks: dict[str, CoordinationTask | None] = {}

    def __call__(self, variant: str | None, content: str) -> str:
        """The answer in ``content`` to the question ``variant`` (``TASK@phase``)."""
        name = (variant or "").partition("@")[0]
        if name not in self._tasks:
            try:
                self._tasks[name] = load_task(self.library, name)
            except ClonechatError:
                self._tasks[name] = None
        task = self._tasks[name]
        return task.normalise(content) if task is not None else " ".join(content.casefold().split())
