"""Teaching: learning data appended to learning_data.txt, and the fine-tuning that learns it."""
from __future__ import annotations

from cli.inputs import read_block, read_text
from cli.progress import TrainingProgress
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import Settings

USABLE = 0.5  # below this share of taught facts answered, the fine-tuning taught nothing a user can rely on


def learn_entry(settings: Settings, knowledge_base, text: str, texts: dict) -> None:
    """Save the entry, and make it a document of the knowledge base: answered at once, before fine-tuning."""
    from training.learning_data import append_entry, read_entries, sync_knowledge_base
    from training.teaching import facts_of
    doc_id = append_entry(settings.learning_data, text)
    sync_knowledge_base(settings.learning_data, knowledge_base)
    print(texts["learned"].format(id=doc_id, entries=len(read_entries(settings.learning_data))))
    if not facts_of(text):
        print(texts["too_short"])


def forget_entry(settings: Settings, knowledge_base, wanted: str, texts: dict) -> None:
    from training.learning_data import entry_id, read_entries, remove_entry, sync_knowledge_base
    text = remove_entry(settings.learning_data, wanted)
    sync_knowledge_base(settings.learning_data, knowledge_base)
    shown = text if len(text) <= 80 else text[:77] + "..."
    print(texts["forgotten"].format(id=entry_id(text), text=shown.replace("\n", " "),
                                    entries=len(read_entries(settings.learning_data))))


def fine_tune(assistant, config, texts: dict) -> None:
    """Train in a subprocess with a progress bar; the gate's verdict says whether the new model is used."""
    from fine_tune_model import run_fine_tuning
    progress = TrainingProgress()
    try:
        manifest = run_fine_tuning(assistant.settings, config, progress)
    finally:
        progress.close()
    if manifest is None:
        print(texts["unchanged"])
        return
    training, data = manifest["training"], manifest["data"]["learning_data"]
    print(texts["finetuned"].format(seconds=training["seconds"], steps=training["steps"],
                                    entries=len(data["new_entry_ids"]), questions=data["questions"]))
    findings = {finding["metric"]: finding for finding in manifest["gate"].get("findings", [])}
    if "facts_answered" in findings and "general_answered" in findings:
        facts, general = findings["facts_answered"], findings["general_answered"]
        print(texts["taught"].format(before=facts["champion"], after=facts["candidate"],
                                     general_before=general["champion"], general_after=general["candidate"]))
        if facts["candidate"] < USABLE:
            print(texts["not_usable"])
    report_verdict(manifest, texts)


def report_verdict(manifest: dict, texts: dict) -> None:
    """What the promotion gate decided, and what it means for the model in use."""
    gate = manifest["gate"]
    if manifest["verdict"] == "refused":
        print(texts["refused"].format(version=manifest["id"], failed=gate["failed"], champion=gate["champion"]))
    elif "skipped" in gate:
        print(texts["promoted_unchecked"].format(version=manifest["id"]))
    else:
        print(texts["promoted"].format(version=manifest["id"], champion=gate["champion"]))


def menu_learn(assistant, texts: dict) -> None:
    text = read_block(texts["text"])
    if not text.strip():
        print(texts["empty"])
        return
    learn_entry(assistant.settings, assistant.knowledge_base, text, texts)


def menu_finetune(assistant, texts: dict) -> None:
    from fine_tune_model import FineTuneConfig
    fine_tune(assistant, FineTuneConfig(), texts)


@command("learn", "append an entry to learning_data.txt",
         option("text", nargs="?", help="the entry ('-' reads stdin)"),
         option("--file", help="read the entry from this file"))
def learn(settings: Settings, arguments) -> int:
    from cli.knowledge import open_knowledge_base
    learn_entry(settings, open_knowledge_base(settings), read_text(arguments.text, arguments.file), TEXTS["en"])
    return 0


@command("learned", "list the entries of learning_data.txt, with their ids")
def learned(settings: Settings, arguments) -> int:
    from training.learning_data import entry_id, read_entries
    entries = read_entries(settings.learning_data)
    if not entries:
        print(TEXTS["en"]["no_entries"])
    for number, entry in enumerate(entries, 1):
        line = " ".join(entry.split())
        print(f"{number:>4}  {entry_id(entry)}  {line if len(line) <= 90 else line[:87] + '...'}")
    return 0


@command("forget", "take back an entry of learning_data.txt (and its document in the knowledge base)",
         option("entry", help="its id or number, as 'learned' lists them"))
def forget(settings: Settings, arguments) -> int:
    from cli.knowledge import open_knowledge_base
    forget_entry(settings, open_knowledge_base(settings), arguments.entry, TEXTS["en"])
    return 0


def finetune_options(parser) -> None:
    from fine_tune_model import FineTuneConfig
    FineTuneConfig.add_arguments(parser)


@command("finetune", "fine-tune the model on all learning data, then use it", finetune_options)
def finetune(settings: Settings, arguments) -> int:
    from fine_tune_model import FineTuneConfig
    from rag_module import Assistant
    fine_tune(Assistant(settings), FineTuneConfig.from_arguments(arguments), TEXTS["en"])
    return 0
