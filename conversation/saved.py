"""The conversations a user keeps: one JSON file each in the data dir, replaced whole at every turn, so that
two processes (the menu and the page) never leave half a conversation; listed newest first and deletable."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from common.errors import ApprentiError
from common.files import write_whole

ID = re.compile(r"[0-9a-f]{8}")  # what `new` makes; anything else given as an id names no file of ours


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Conversation:
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    # {"role": "user", "content": ...} and {"role": "assistant", "content": ..., "model": ..., "sources": [ids],
    # "refused": bool}, oldest first
    turns: list[dict] = field(default_factory=list)

    @property
    def title(self) -> str:
        first = next((turn["content"] for turn in self.turns if turn["role"] == "user"), "")
        first = " ".join(first.split())
        return first if len(first) <= 60 else first[:57] + "..."

    def history(self) -> list[dict]:
        """The turns as the model and the retrieval read them."""
        return [{"role": turn["role"], "content": turn["content"]} for turn in self.turns]

    def add(self, question: str, answer) -> None:
        """A question and its answer (rag_module.Answer)."""
        self.turns += [{"role": "user", "content": question},
                       {"role": "assistant", "content": answer.answer, "model": answer.model,
                        "sources": [source.id for source in answer.sources], "refused": answer.refused}]
        self.updated = now()


class Conversations:
    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, conversation_id: str) -> Path:
        if not ID.fullmatch(conversation_id):
            raise ApprentiError(f"'{conversation_id}' is not a conversation id: `conversations` lists them")
        return self.folder / f"{conversation_id}.json"

    def get(self, conversation_id: str) -> Conversation:
        path = self.path(conversation_id)
        try:
            return Conversation(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ApprentiError(f"no conversation {conversation_id}: `conversations` lists them") from None
        except (OSError, ValueError, TypeError) as error:
            raise ApprentiError(f"cannot read conversation {conversation_id} ({path}): {error}") from None

    def save(self, conversation: Conversation) -> None:
        write_whole(self.path(conversation.id), json.dumps(asdict(conversation), ensure_ascii=False, indent=1)
                    .encode())

    def all(self) -> tuple[list[Conversation], list[str]]:
        """The conversations, the latest updated first, and a problem for each file that cannot be read."""
        found, problems = [], []
        for path in sorted(self.folder.glob("*.json")):
            try:
                found.append(self.get(path.stem))
            except ApprentiError as error:
                problems.append(str(error))
        return sorted(found, key=lambda conversation: conversation.updated, reverse=True), problems

    def delete(self, conversation_id: str) -> None:
        try:
            self.path(conversation_id).unlink()
        except FileNotFoundError:
            raise ApprentiError(f"no conversation {conversation_id}: `conversations` lists them") from None
