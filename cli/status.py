"""What Apprenti holds: models, knowledge base and learning data."""
from __future__ import annotations

import json

from cli.registry import command, option
from common.config import Settings
from common.errors import ApprentiError


def status_line(settings: Settings) -> str:
    """Cheap enough for the menu's first screen: no model is loaded for it."""
    from inference.installed import read_training_record
    from training.learning_data import read_entries
    record = read_training_record(settings.finetuned_dir) if settings.use_finetuned else None
    model = settings.base_model + (f" (fine-tuned {record['finished_at'][:10]} from {record['base_model']})"
                                   if record else "")
    try:
        entries = len(read_entries(settings.learning_data))
    except ApprentiError:
        entries = "unreadable"
    return f"model: {model} · learning data: {entries} entries · data dir: {settings.home}"


@command("status", "models, knowledge base and learning data",
         option("--json", action="store_true", help="print one JSON object"))
def status(settings: Settings, arguments) -> int:
    from inference.installed import installed_record
    from knowledge_base import KnowledgeBase
    from training.learning_data import read_entries
    kb = KnowledgeBase.open(settings)
    record = installed_record(settings.finetuned_dir)
    status = {
        "data_dir": str(settings.home),
        "base_model": settings.base_model,
        "fine_tuned": record,
        "use_fine_tuned": settings.use_finetuned,
        "knowledge_base": {"documents": len(kb.documents()), "chunks": kb.count_chunks(),
                           "server": settings.chroma_url or None},
        "learning_data_entries": len(read_entries(settings.learning_data)),
        "relevance_threshold": settings.relevance_threshold,
    }
    if arguments.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"data dir:         {status['data_dir']}")
    print(f"base model:       {settings.base_model}")
    if record:
        print(f"fine-tuned model: {record['method']} from {record['base_model']}, {record['finished_at']}, "
              f"{record['steps']} steps on {record['entries']} entries; perplexity on the learning data "
              f"{record['perplexity_before']:.2f} -> {record['perplexity_after']:.2f}, on general text "
              f"{record['perplexity_general_before']:.2f} -> {record['perplexity_general_after']:.2f}"
              + ("" if settings.use_finetuned else " (not used: --base)"))
    else:
        print("fine-tuned model: none yet")
    print(f"knowledge base:   {status['knowledge_base']['documents']} documents, "
          f"{status['knowledge_base']['chunks']} chunks")
    print(f"learning data:    {status['learning_data_entries']} entries")
    return 0
