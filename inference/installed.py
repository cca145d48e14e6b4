"""The fine-tuned model in use (tinyllama_finetuned/): its record, its atomic installation, and the choice
between it and the base model.

The installer and the readers take the same lock, so that a reader never sees the moment between the two
renames of an installation (and never "recovers" the old model into the new one's place).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from common.config import Settings
from common.files import file_lock
from common.messages import notice
from inference.locate import ModelSource, resolve_base_model

TRAINING_RECORD = "apprenti_training.json"


def read_training_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / TRAINING_RECORD).read_text())
    except (OSError, ValueError):
        return None


def installation_lock(target: Path):
    return file_lock(target.with_name(target.name + ".lock"))


def install_model(new: Path, target: Path) -> None:
    """Put a finished model folder in place of `target`. The old one is moved aside first, so a crash at
    any point leaves one whole model: `installed_record` puts it back if the new one never arrived."""
    previous = target.with_name(target.name + ".previous")
    with installation_lock(target):
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.rename(target, previous)
        os.rename(new, target)
        shutil.rmtree(previous, ignore_errors=True)


def installed_record(target: Path) -> dict | None:
    """The training record of the model installed at `target`, after putting back the previous model if
    an installation crashed between its two renames."""
    previous = target.with_name(target.name + ".previous")
    if not target.exists() and previous.is_dir():
        with installation_lock(target):
            if not target.exists() and previous.is_dir():
                os.rename(previous, target)
    return read_training_record(target)


def choose_chat_model(settings: Settings) -> ModelSource:
    """The fine-tuned model when it was trained from the base model in use, else the base model."""
    base = resolve_base_model(settings)
    if settings.use_finetuned:
        record = installed_record(settings.finetuned_dir)
        if record and record.get("base_model") == base.name:
            name = f"{base.name}, fine-tuned {record['finished_at'][:16].replace('T', ' ')}"
            if record["method"] == "lora":
                return ModelSource(name, base.path, adapter=settings.finetuned_dir)
            return ModelSource(name, settings.finetuned_dir)
        if record:
            notice(f"tinyllama_finetuned/ was trained from {record.get('base_model')}, not {base.name}: "
                   "using the base model")
    return base
