"""Teaching: learning data appended to learning_data.txt, and the fine-tuning that learns it."""
from __future__ import annotations

from cli.inputs import read_block, read_text
from cli.progress import TrainingProgress
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import Settings


def learn_entry(settings: Settings, text: str, texts: dict) -> None:
    from training.learning_data import append_entry, read_entries
    append_entry(settings.learning_data, text)
    print(texts["learned"].format(entries=len(read_entries(settings.learning_data))))


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
    training = manifest["training"]
    print(texts["finetuned"].format(seconds=training["seconds"], before=training["perplexity_before"],
                                    after=training["perplexity_after"],
                                    general_before=training["perplexity_general_before"],
                                    general_after=training["perplexity_general_after"]))
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
    learn_entry(assistant.settings, text, texts)


def menu_finetune(assistant, texts: dict) -> None:
    from fine_tune_model import FineTuneConfig
    fine_tune(assistant, FineTuneConfig(), texts)


@command("learn", "append an entry to learning_data.txt",
         option("text", nargs="?", help="the entry ('-' reads stdin)"),
         option("--file", help="read the entry from this file"))
def learn(settings: Settings, arguments) -> int:
    learn_entry(settings, read_text(arguments.text, arguments.file), TEXTS["en"])
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
