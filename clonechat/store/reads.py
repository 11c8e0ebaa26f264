"""TEMPORARY shim while consumers move to :mod:`clonechat.read` (issue 15); deleted at the end."""

from __future__ import annotations

from clonechat.read.connect import Readable
from clonechat.read.dialogues import DialogueSummary as DialogueSummary
from clonechat.read.dialogues import dialogue_summaries
from clonechat.read.dialogues import prompt_text as prompt_text
from clonechat.read.dialogues import resolve_dialogue as resolve_dialogue
from clonechat.read.paths import dialogue_path as dialogue_path
from clonechat.read.paths import node_record as node_record
from clonechat.read.paths import path_to as path_to
from clonechat.read.sides import SIDE_KINDS as SIDE_KINDS
from clonechat.read.sides import side_answers as side_answers
from clonechat.read.sides import side_nodes as side_nodes


def list_dialogues(
    db: Readable, *, experiment: str | None = None, experiment_id: str | None = None, limit: int | None = 50
) -> list[DialogueSummary]:
    return dialogue_summaries(db, experiment=experiment, experiment_id=experiment_id, limit=limit)
