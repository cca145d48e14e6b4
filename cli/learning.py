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
    """Train in a subprocess with a progress bar, then answer with the new model at once."""
    from fine_tune_model import run_fine_tuning
    progress = TrainingProgress()
    try:
        record = run_fine_tuning(assistant.settings, config, progress)
    finally:
        progress.close()
    if record is None:
        print(texts["unchanged"])
        return
    print(texts["finetuned"].format(seconds=record["seconds"], before=record["perplexity_before"],
                                    after=record["perplexity_after"],
                                    general_before=record["perplexity_general_before"],
                                    general_after=record["perplexity_general_after"]))
    assistant.reload_model()
    print(texts["now_using"].format(model=assistant.model.name))


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
