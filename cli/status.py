"""What Apprenti holds: models, knowledge base and learning data."""
from __future__ import annotations

import json

from cli.registry import command, option
from common.config import Settings
from common.errors import ApprentiError


def status_line(settings: Settings) -> str:
    """Cheap enough for the menu's first screen: no model is loaded for it."""
    from inference.locate import base_model_name
    from inference.versions import BASE, Versions
    from training.learning_data import read_entries
    versions = Versions(settings)
    champion = versions.in_use()
    if champion == BASE:
        model = base_model_name(settings)
    else:
        try:
            model = f"version {champion}, fine-tuned from {versions.get(champion).manifest.get('base_model')}"
        except ApprentiError:  # the version's own commands say what is wrong with it
            model = f"version {champion}"
    try:
        entries = len(read_entries(settings.learning_data))
    except ApprentiError:
        entries = "unreadable"
    return f"model: {model} · learning data: {entries} entries · data dir: {settings.home}"


@command("status", "models, knowledge base and learning data",
         option("--json", action="store_true", help="print one JSON object"))
def status(settings: Settings, arguments) -> int:
    from inference.versions import BASE, Versions
    from knowledge_base import KnowledgeBase
    from training.learning_data import read_entries
    kb = KnowledgeBase.open(settings)
    versions = Versions(settings)
    champion = versions.get(versions.champion())
    record = champion.manifest if champion.id != BASE else None
    status = {
        "data_dir": str(settings.home),
        "base_model": settings.base_model,
        "champion": champion.id,
        "fine_tuned": record,
        "use_fine_tuned": settings.use_finetuned,
        "backend": settings.backend,
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
        print(f"model in use:     version {champion.id}, {record['method']} ({record.get('weights')}) from "
              f"{record['base_model']}, {record['created']}, {trained_on(record)}"
              + ("" if settings.use_finetuned else " (not used: --base)"))
    else:
        print("model in use:     the base model" + ("" if settings.use_finetuned else " (--base)"))
    print(f"answers from:     {settings.backend}" + ("" if settings.backend == "transformers" else
                                                         " (ONNX Runtime GenAI; APPRENTI_BACKEND=transformers: "
                                                         "the training path)"))
    print(f"knowledge base:   {status['knowledge_base']['documents']} documents, "
          f"{status['knowledge_base']['chunks']} chunks")
    print(f"learning data:    {status['learning_data_entries']} entries")
    return 0


def trained_on(record: dict) -> str:
    """"48 steps on 6 entries; facts answered 83%, general questions 70%": what the manifest holds, whatever
    the method."""
    sizes = [f"{described.get('entries', described.get('rows'))} {DATA_LABELS.get(name, name)}"
             for name, described in record.get("data", {}).items()
             if isinstance(described, dict) and (described.get("entries") or described.get("rows"))]
    said = f"{record.get('training', {}).get('steps')} steps" + (f" on {', '.join(sizes)}" if sizes else "")
    metrics = record.get("metrics", {})
    measured = [f"{label} {metrics[name]:.0%}" for name, label in METRIC_LABELS.items()
                if isinstance(metrics.get(name), (int, float))]
    return said + ("; " + ", ".join(measured) if measured else "")


DATA_LABELS = {"learning_data": "entries", "test": "held-out rows"}
METRIC_LABELS = {"facts_answered": "taught facts answered", "general_answered": "general questions answered",
                 "answer_contains": "answers from passages right"}
