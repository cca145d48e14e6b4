"""Model versions: every training run makes one, and one of them, or the base model, is the champion that
answers use.

    models/versions/<id>/      the weights (LoRA adapters, or a whole model) and manifest.json
    models/promotions.jsonl    every promotion, refusal, forced promotion and rollback, one line each
    tinyllama_finetuned        a link to the champion's folder (absent while the champion is the base model)

A version is written in a hidden folder beside the others and appears under its id only once whole and
judged. The champion pointer is the link itself: a new link is made beside it and renamed over it, so a
reader sees the old champion or the new one, never none, and nothing is copied.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from common.files import append_whole, file_lock, write_whole
from common.jsonl import json_lines_of
from common.messages import notice
from inference.locate import ModelSource, resolve_base_model

BASE = "base"
MANIFEST = "manifest.json"
LEGACY_RECORD = "apprenti_training.json"  # what tinyllama_finetuned/ held before versions
VERDICTS = ("promoted", "refused", "forced", "base")  # what `models list --json` may say of a version


@dataclass
class Version:
    id: str
    folder: Path | None  # None for the base model
    manifest: dict

    @property
    def verdict(self) -> str:
        return self.manifest.get("verdict", "promoted")

    def summary(self, champion: str) -> dict:
        """The line of `models list --json`."""
        return {"id": self.id, "parent": self.manifest.get("parent"), "method": self.manifest.get("method", BASE),
                "created": self.manifest.get("created"), "verdict": self.verdict, "champion": self.id == champion}


class Versions:
    """The versions of a family of models: "chat" (the models answers come from) or "reward" (the reward
    models of models/reward_model/, which score answers for the online learning methods)."""

    def __init__(self, settings: Settings, family: str = "chat"):
        self.settings = settings
        if family == "chat":
            self.root, self.pointer = settings.models_dir / "versions", settings.finetuned_dir
            self.log = settings.models_dir / "promotions.jsonl"
        else:
            folder = settings.reward_models_dir
            self.root, self.pointer, self.log = folder / "versions", folder / "current", folder / "promotions.jsonl"

    def lock(self):
        return file_lock(self.settings.models_dir / "versions.lock")

    # ------------------------------------------------------------ reading

    def base(self) -> Version:
        return Version(BASE, None, {"id": BASE, "parent": None, "method": BASE, "created": None, "verdict": BASE,
                                    "base_model": self.settings.base_model})

    def get(self, version_id: str) -> Version:
        if version_id == BASE:
            return self.base()
        folder = self.root / version_id
        if not version_id or version_id.startswith(".") or "/" in version_id or not folder.is_dir():
            raise ApprentiError(f"no version '{version_id}': 'python cli_app.py models list' shows them")
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            raise ApprentiError(f"version '{version_id}' has no readable {MANIFEST} ({error}): remove its folder "
                                f"{folder}") from None
        return Version(version_id, folder, manifest)

    def all(self) -> tuple[list[Version], list[str]]:
        """Every version, the base first then by creation; and the problems of unreadable ones."""
        if self.pointer.is_dir() and not self.pointer.is_symlink():
            self.adopt_legacy_model()  # a model left by an older Apprenti
        versions, problems = [], []
        for folder in self.root.iterdir() if self.root.is_dir() else []:
            if folder.is_dir() and not folder.name.startswith("."):
                try:
                    versions.append(self.get(folder.name))
                except ApprentiError as error:
                    problems.append(str(error))
        return [self.base(), *sorted(versions, key=lambda v: (v.manifest.get("created") or "", v.id))], problems

    def champion(self) -> str:
        """The champion's id. A link to a version that is gone (deleted by hand) falls back to the base."""
        if self.pointer.is_dir() and not self.pointer.is_symlink():
            self.adopt_legacy_model()
        if not self.pointer.is_symlink():
            return BASE
        version_id = Path(os.readlink(self.pointer)).name
        if not (self.root / version_id / MANIFEST).is_file():
            notice(f"the model in use, version '{version_id}', is gone: answering with the base model "
                   "('python cli_app.py models list' shows the versions left)")
            return BASE
        return version_id

    def in_use(self) -> str:
        """The version answers use: the champion, or the base model when the settings say so (--base)."""
        return self.champion() if self.settings.use_finetuned else BASE

    def history(self) -> list[dict]:
        """The promotion log, oldest first; a line cut by a crash is left out, the others stand."""
        return [line.record for line in json_lines_of(self.log) if line.record is not None]

    def previous_champion(self) -> str:
        """The champion before the current one, by the log of pointer changes read as a stack: each change
        pushes the champion it replaced, a rollback pops it, so rollbacks in a row go further back in time.
        Pruned versions leave the stack."""
        earlier: list[str] = []
        for event in self.history():
            if event.get("action") == "pruned":
                earlier = [version_id for version_id in earlier if version_id != event.get("version")]
            elif event.get("previous") not in (None, event.get("version")):
                if event.get("action") == "rollback":
                    del earlier[-1:]
                else:
                    earlier.append(event["previous"])
        if not earlier:
            raise ApprentiError("there is no earlier model to roll back to")
        return earlier[-1]

    def source(self, version_id: str) -> ModelSource:
        """What loads version `version_id`: the base model, with the version's adapters or replaced by it."""
        if version_id == BASE:
            return resolve_base_model(self.settings)
        version = self.get(version_id)
        return self.source_of(version_id, version.folder, version.manifest)

    def source_of(self, version_id: str, folder: Path, manifest: dict) -> ModelSource:
        """The same for a version still being written (the gate evaluates it before publishing it). A LoRA
        version's adapters apply on its parent: its own adapter comes after the parent's."""
        base = resolve_base_model(self.settings)
        if manifest.get("base_model") != base.name:
            raise ApprentiError(f"version '{version_id}' was trained from {manifest.get('base_model')}, "
                                f"not {base.name}")
        name = f"{base.name}, version {version_id}"
        if manifest.get("weights") != "lora":
            return ModelSource(name, folder, version=version_id)
        parent = manifest.get("parent") or BASE
        try:
            below = base if parent == BASE else self.source(parent)
        except ApprentiError as error:
            raise ApprentiError(f"version '{version_id}' builds on version '{parent}': {error}") from None
        return ModelSource(name, below.path, adapters=(*below.adapters, folder), version=version_id)

    def ancestors(self, version_id: str) -> list[str]:
        """The versions `version_id` was trained from, nearest first (the base model left out)."""
        chain = []
        while version_id != BASE and (self.root / version_id / MANIFEST).is_file():
            version_id = self.get(version_id).manifest.get("parent") or BASE
            if version_id != BASE:
                chain.append(version_id)
        return chain

    # ------------------------------------------------------------ writing

    def staging(self) -> tuple[str, Path]:
        """A new version's id and the hidden folder to write it in; `publish` makes it a version."""
        with self.lock():
            self.root.mkdir(parents=True, exist_ok=True)
            stamp, suffix = datetime.now().strftime("v%Y%m%d-%H%M%S"), 0
            while True:
                version_id = stamp + (f"-{suffix}" if suffix else "")
                partial = self.root / f".{version_id}.partial"
                if not (self.root / version_id).exists() and not partial.exists():
                    partial.mkdir()
                    return version_id, partial
                suffix += 1

    def publish(self, version_id: str, partial: Path, manifest: dict) -> Version:
        manifest = {"id": version_id, **manifest, "created": manifest.get("created") or now()}
        try:
            write_whole(partial / MANIFEST, json.dumps(manifest, indent=2).encode())
            os.rename(partial, self.root / version_id)
        except OSError as error:
            raise ApprentiError(f"cannot save the new version in {self.root}: {error.strerror}; "
                                "the model in use is kept") from None
        return Version(version_id, self.root / version_id, manifest)

    def discard_partials(self) -> None:
        """Folders of runs that died before publishing (the caller holds the training lock)."""
        for partial in self.root.glob(".*.partial") if self.root.is_dir() else []:
            shutil.rmtree(partial, ignore_errors=True)

    def update_manifest(self, version: Version, **fields) -> None:
        version.manifest.update(fields)
        write_whole(version.folder / MANIFEST, json.dumps(version.manifest, indent=2).encode())

    def set_champion(self, version_id: str, action: str, **details) -> str:
        """Make `version_id` the champion, atomically, and log the `action` that did it; returns the previous."""
        self.get(version_id)
        self.adopt_legacy_model()  # before taking the lock, which adopting takes too
        with self.lock():
            previous = self.champion()
            if version_id == BASE:
                self.pointer.unlink(missing_ok=True)
            else:
                link = self.pointer.with_name(f".{self.pointer.name}.{os.getpid()}.link")
                link.unlink(missing_ok=True)
                link.symlink_to(os.path.relpath(self.root / version_id, self.pointer.parent))
                os.replace(link, self.pointer)
            self.record(action, version_id, previous=previous, **details)
        return previous

    def record(self, action: str, version_id: str, **details) -> None:
        line = {"time": now(), "action": action, "version": version_id, **details}
        append_whole(self.log, (json.dumps(line) + "\n").encode(), own_line=True)

    def prune(self, keep: int) -> list[str]:
        """Remove all but the `keep` newest versions; never the champion, whatever its age, nor a version
        that a kept one was trained from (its adapters apply on top of that version's)."""
        self.adopt_legacy_model()  # before taking the lock, which adopting takes too
        with self.lock():
            champion = self.champion()
            versions, _ = self.all()
            newest_first = [version for version in versions[1:] if version.id != champion][::-1]
            kept = {version.id for version in newest_first[:keep]} | {champion}
            needed = kept | {ancestor for version_id in kept for ancestor in self.ancestors(version_id)}
            removable = [version for version in newest_first[keep:] if version.id not in needed]
            for version in removable:
                shutil.rmtree(version.folder)
                self.record("pruned", version.id)
        return [version.id for version in removable]

    def adopt_legacy_model(self) -> None:
        """An older Apprenti installed its fine-tuned model as the folder tinyllama_finetuned/ itself: it
        becomes a version (promoted, as it was in use), and the folder a link to it."""
        with self.lock():
            record_file = self.pointer / LEGACY_RECORD
            if self.pointer.is_symlink() or not record_file.is_file():
                return
            record = json.loads(record_file.read_text(encoding="utf-8"))
            version_id = "v" + record["finished_at"].replace("-", "").replace(":", "").replace("T", "-")[:15]
            self.root.mkdir(parents=True, exist_ok=True)
            manifest = {"id": version_id, "parent": BASE, "base_model": record["base_model"],
                        "method": "pretraining", "weights": record["method"], "config": record.get("config", {}),
                        "training": record, "created": record["finished_at"], "verdict": "promoted",
                        "gate": {"skipped": "made before the gate existed"}}
            write_whole(self.pointer / MANIFEST, json.dumps(manifest, indent=2).encode())
            os.rename(self.pointer, self.root / version_id)
            self.pointer.symlink_to(os.path.relpath(self.root / version_id, self.pointer.parent))
            self.record("adopted", version_id, previous=BASE)


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def choose_chat_model(settings: Settings) -> ModelSource:
    """The champion; the base model with --base, or when the champion was trained from another base model."""
    versions = Versions(settings)
    try:
        return versions.source(versions.in_use())
    except ApprentiError as error:
        notice(f"{error}: using the base model")
        return resolve_base_model(settings)
