"""Each agent's own view of the conversation.

Both agents read the same path through the tree, but each sees its own messages as
``assistant`` and everything else as ``user``. The researcher's opening is shown only to the
agent that speaks first, and a researcher's interjection addressed to one agent only to that
agent. Views only ever grow by appending, which keeps every request a
byte-identical extension of the last one, so KV and prefix caches are reused.
"""

from __future__ import annotations

from collections.abc import Sequence

from clonechat.engine.records import CONVERSATION_KINDS, AgentName, NodeRecord, addressed_to
from clonechat.providers.base import ChatMessage, Role


def agent_view(
    agent: AgentName, system_prompt: str, path: Sequence[NodeRecord], first_speaker: AgentName
) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt))
    for node in path:
        if node.kind not in CONVERSATION_KINDS:
            continue
        if node.kind == "opening" and agent != first_speaker:
            continue
        if not addressed_to(node, agent):
            continue  # a researcher's interjection to the partner only
        role: Role = "assistant" if node.speaker == agent else "user"
        if messages and messages[-1].role == "user" and role == "user":
            # Two incoming messages in a row (a researcher's interjection on a branch):
            # merge them so chat templates that require alternation accept the view.
            messages[-1] = ChatMessage("user", messages[-1].content + "\n\n" + node.content)
        else:
            messages.append(ChatMessage(role, node.content))
    return messages
