"""Asking: answers streamed with their sources, plain completion, and search without an answer."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from cli.inputs import check_size, read_text
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import Settings
from common.errors import ApprentiError


def print_chunk(piece: str) -> None:
    print(piece, end="", flush=True)


def print_sources(answer, texts: dict, threshold: float) -> None:
    if not answer.sources:
        print(texts["no_sources"].format(threshold=threshold))
        return
    print(texts["sources"])
    for source in answer.sources:
        excerpt = " ".join(source.text.split())
        print(f"  [{source.id}] {source.score:.2f}  {excerpt[:100]}{'...' if len(excerpt) > 100 else ''}")


def answer_aloud(assistant, question: str, texts: dict, k: int | None = None, use_rag: bool = True,
                 conversation=None):
    """The answer streamed to the terminal, then its sources: what menu 1 and `ask` show. In a `conversation`
    (conversation/saved.py), the question follows its turns and is added to them."""
    if not question.strip():
        raise ApprentiError("the question is empty")
    answer = ask_in(assistant, question, conversation, k=k, use_rag=use_rag, on_text=print_chunk)
    print()
    if use_rag:
        print_sources(answer, texts, assistant.settings.relevance_threshold)
    return answer


def ask_in(assistant, question: str, conversation, **options):
    """assistant.ask(question, **options) after the `conversation`'s turns (none: alone), added to them."""
    answer = assistant.ask(question, history=conversation.history() if conversation else (), **options)
    if conversation:
        conversation.add(question, answer)
    return answer


class MenuConversation:
    """Menu 1's conversation: each question follows the earlier ones until the user types /new; kept in the
    data dir after every answer, so `conversations` lists it and `ask --conversation ID` continues it."""

    def __init__(self, settings: Settings):
        from conversation.saved import Conversation, Conversations
        self.saved = Conversations(settings.conversations_dir)
        self.current = Conversation()

    def ask(self, assistant, texts: dict) -> None:
        from cli.feedback import ask_rating
        from conversation.saved import Conversation
        if self.current.turns:
            print(texts["conversation"].format(id=self.current.id, questions=len(self.current.turns) // 2))
        question = check_size(input(texts["question"])).strip()
        if question.lower().startswith(NEW_CONVERSATION):
            self.current = Conversation()
            question = question[len(NEW_CONVERSATION):].strip()
            print(texts["new_conversation"])
        if not question:
            print(texts["empty"])
            return
        if not assistant.model_loaded:
            print(texts["loading"], flush=True)
        answer = answer_aloud(assistant, question, texts, conversation=self.current)
        self.saved.save(self.current)
        if sys.stdin.isatty():  # a script piping the menu is never asked
            ask_rating(assistant.settings, question, answer, texts, self.current.history()[:-2])


NEW_CONVERSATION = "/new"  # typed at menu 1's question, alone or before the question


@command("ask", "answer a question from the knowledge base, with its sources",
         option("question", help="the question ('-' reads stdin)"),
         option("--json", action="store_true", help="print one JSON object"),
         option("-k", type=int, default=None, help="passages to retrieve"),
         option("--no-rag", action="store_true", help="ask the model alone: no retrieval, no refusal"),
         option("--conversation", metavar="ID", help="continue this conversation (`conversations` lists them; "
                                                       "'new' starts one): the question follows its turns"))
def ask(settings: Settings, arguments) -> int:
    from conversation.saved import Conversation, Conversations
    from rag_module import Assistant
    assistant = Assistant(settings)
    question = read_text(arguments.question, None)
    if not question.strip():
        raise ApprentiError("the question is empty")
    saved = Conversations(settings.conversations_dir)
    conversation = None
    if arguments.conversation:
        conversation = Conversation() if arguments.conversation == "new" else saved.get(arguments.conversation)
    if arguments.json:
        answer = ask_in(assistant, question, conversation, k=arguments.k, use_rag=not arguments.no_rag)
        if conversation:
            saved.save(conversation)
        print(json.dumps({**answer.to_json(), "conversation": conversation and conversation.id}, ensure_ascii=False))
        return 0
    answer_aloud(assistant, question, TEXTS["en"], arguments.k, not arguments.no_rag, conversation)
    if conversation:
        saved.save(conversation)
        print(f"(conversation {conversation.id}: continue it with --conversation {conversation.id})")
    return 0


@command("complete", "the model's plain continuation of a text (what fine-tuning taught shows here)",
         option("text", help="the text ('-' reads stdin)"))
def complete(settings: Settings, arguments) -> int:
    from rag_module import Assistant
    text = read_text(arguments.text, None)
    if not text.strip():
        raise ApprentiError("the text to complete is empty")
    Assistant(settings).complete(text, on_text=print_chunk)
    print()
    return 0


@command("search", "the ranked passages for a query, without an answer",
         option("query", help="the query ('-': one query a line on stdin, one JSON array a line out)"),
         option("-k", type=int, default=None, help="passages to return"),
         option("--json", action="store_true", help="print a JSON array"),
         option("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid",
                help="by meaning and words (default), by meaning only, by words only"))
def search(settings: Settings, arguments) -> int:
    """One query, or (QUERY '-') one query a line of stdin and one JSON array a line, the models loaded once."""
    from knowledge_base import KnowledgeBase
    k = arguments.k or settings.top_k
    if not arguments.query.strip():
        raise ApprentiError("the query is empty")
    kb = KnowledgeBase.open(settings)
    if arguments.query == "-":
        for line in sys.stdin:
            passages = kb.search(line.strip(), k, arguments.mode) if line.strip() else []
            print(json.dumps([asdict(passage) for passage in passages], ensure_ascii=False), flush=True)
        return 0
    passages = kb.search(check_size(arguments.query).strip(), k, arguments.mode)
    if arguments.json:
        print(json.dumps([asdict(passage) for passage in passages], ensure_ascii=False))
        return 0
    for rank, passage in enumerate(passages, 1):
        excerpt = " ".join(passage.text.split())
        print(f"{rank:>2}. {passage.score:.3f}  {passage.id}  ({passage.source})\n    {excerpt[:160]}"
              f"{'...' if len(excerpt) > 160 else ''}")
    if not passages:
        print("The knowledge base is empty.")
    return 0
