"""The conversations kept in the data dir (menu 1, `ask --conversation`, the page): list, show, delete."""
from __future__ import annotations

import json
from dataclasses import asdict

from cli.registry import command, option
from common.config import Settings


@command("conversations", "the conversations kept: list, show ID, delete ID",
         option("action", nargs="?", choices=["list", "show", "delete"], default="list"),
         option("id", nargs="?", help="the conversation (as `list` shows it)"),
         option("--json", action="store_true", help="print JSON"))
def conversations(settings: Settings, arguments) -> int:
    """Menu 1 keeps its conversation after every answer; `ask --conversation ID` continues one."""
    from conversation.saved import Conversations
    from common.errors import ApprentiError
    saved = Conversations(settings.conversations_dir)
    if arguments.action != "list" and not arguments.id:
        raise ApprentiError(f"conversations {arguments.action} needs an id: `conversations` lists them")
    if arguments.action == "delete":
        saved.delete(arguments.id)
        print(f"Deleted conversation {arguments.id}.")
        return 0
    if arguments.action == "show":
        conversation = saved.get(arguments.id)
        if arguments.json:
            print(json.dumps(asdict(conversation), ensure_ascii=False))
            return 0
        for turn in conversation.turns:
            sources = f"  [{', '.join(turn['sources'])}]" if turn.get("sources") else ""
            print(f"{'You' if turn['role'] == 'user' else 'Apprenti'}: {turn['content']}{sources}")
        return 0
    found, problems = saved.all()
    for problem in problems:
        print(f"skipped: {problem}")
    if arguments.json:
        print(json.dumps([{"id": c.id, "updated": c.updated, "questions": len(c.turns) // 2, "title": c.title}
                          for c in found], ensure_ascii=False))
        return 0
    for conversation in found:
        print(f"{conversation.id}  {conversation.updated}  {len(conversation.turns) // 2:>3} question(s)  "
              f"{conversation.title}")
    if not found:
        print("No conversations yet: menu 1 and `ask --conversation new QUESTION` start one.")
    return 0
