"""The reward model (step 5 of the pipeline sketch): the base model with a one-number head, trained with trl's
RewardTrainer on the preference pairs to score the chosen answer above the rejected one. It is versioned like
the chat models, in models/reward_model/ (inference/versions.py, family "reward"): a new one is used only if it
ranks the held-out pairs at least as well as the one in use. The online methods (PPO, RLOO, GRPO) learn from
its scores, and `python cli_app.py score` prints one.
"""
from __future__ import annotations

from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report
from training.run import TrainingRun

MIN_PAIRS = 4  # the fewest from which bench/learning.py's reward model ranked unseen pairs of a taste right
NOISE = 0.05  # a new reward model may rank held-out pairs this much worse than the one in use and still replace it


def split_pairs(settings: Settings):
    """The preference pairs, as train and held-out examples (merge-feedback's split, by prompt)."""
    from feedback.datasets import split_of
    from training.examples import preference_pair, read_examples
    pairs = read_examples(settings.rlhf_dataset, lambda record: (split_of(record),
                                                                  preference_pair(record)), "preference pairs")
    train = [example.row[1] for example in pairs.items if example.row[0] == "train"]
    test = [example.row[1] for example in pairs.items if example.row[0] == "test"]
    return pairs, train, test


def conversations(rows: list[dict], answer: str) -> list[list[dict]]:
    return [row["prompt"] + row[answer] for row in rows]


def scores(model, tokenizer, chats: list[list[dict]]) -> list[float]:
    """The reward of each conversation (a prompt and its answer), one at a time: no padding to get wrong."""
    import torch
    from inference.loading import context_window
    found = []
    with torch.inference_mode():
        for chat in chats:
            ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
            ids = torch.tensor([ids[-context_window(model):]], device=model.device)
            found.append(float(model(input_ids=ids).logits[0, 0]))
    return found


def pairwise_accuracy(model, tokenizer, rows: list[dict]) -> float:
    chosen = scores(model, tokenizer, conversations(rows, "chosen"))
    rejected = scores(model, tokenizer, conversations(rows, "rejected"))
    return sum(good > bad for good, bad in zip(chosen, rejected)) / len(rows)


def load_classifier(path: Path, adapters: tuple[Path, ...] = ()):
    """The model at `path` with a one-number head (random until trained), in fp32: the head and adapters are
    trained weights, which bf16 would round."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from inference.loading import quiet_transformers, with_adapters
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                   use_safetensors=True)
        model = with_adapters(model, adapters, merge_all=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def load_reward_model(settings: Settings):
    """The reward model in use and its tokenizer."""
    from inference.versions import BASE, Versions
    versions = Versions(settings, "reward")
    current = versions.champion()
    if current == BASE:
        raise ApprentiError("there is no reward model yet: 'python cli_app.py train-reward' trains one from the "
                            "preference pairs")
    source = versions.source(current)
    return load_classifier(source.path, source.adapters)


class RewardRun(TrainingRun):
    """The reward model on the training lifecycle (training/run.py): from the base model, never the champion
    (a chat model's adapters are no scorer's), judged by its ranking of held-out pairs, not by the chat gate."""
    family, method = "reward", "reward"

    def read_data(self) -> None:
        self.pairs, self.train, self.test = split_pairs(self.settings)
        if len(self.train) < MIN_PAIRS:
            raise ApprentiError(f"a reward model needs at least {MIN_PAIRS} preference pairs to train on; "
                                f"{self.settings.rlhf_dataset.name} has {len(self.train)} (and {len(self.test)} held "
                                "out): compare more answers (menu 7), then 'python cli_app.py merge-feedback'")
        for problem in self.pairs.problems:
            self.report({"event": "notice", "message": problem})

    def data_fingerprint(self) -> str:
        return self.pairs.fingerprint()

    def data_record(self) -> dict:
        return {"pairs": self.pairs.describe(), "train_pairs": len(self.train), "held_out_pairs": len(self.test)}

    def starting_point(self):
        from inference.locate import resolve_base_model
        from inference.versions import BASE
        base = resolve_base_model(self.settings)
        return BASE, type(base)(f"{base.name} (reward model)", base.path)

    def load(self, source):
        return load_classifier(source.path)

    def trainer(self, model, tokenizer, scratch: Path):
        import trl
        from datasets import Dataset
        from inference.loading import context_window
        from training.core import lora_config, trainer_arguments
        arguments = trainer_arguments(trl.RewardConfig, scratch, steps=self.config.steps_for(len(self.train),
                                                                                             self.config.batch_size),
                                      batch_size=self.config.batch_size, learning_rate=self.config.rate_for("reward"),
                                      seed=self.config.seed, max_length=context_window(model))
        return trl.RewardTrainer(model=model, args=arguments, train_dataset=Dataset.from_list(self.train),
                                 processing_class=tokenizer,
                                 peft_config=lora_config(self.config.lora_rank, task_type="SEQ_CLS",
                                                         modules_to_save=["score"]))

    def start_event(self) -> dict:
        return {"entries": len(self.train), "samples": len(self.train), "what": "pairs"}

    def figures(self, trainer) -> dict:
        # Too few pairs for a held-out split: measured on the training pairs, as the manifest says.
        self.accuracy = pairwise_accuracy(trainer.model.eval(), trainer.processing_class, self.test or self.train)
        return {}

    def publish(self, version_id: str, partial: Path, manifest: dict) -> dict:
        """Replaces the reward model in use unless it ranks the held-out pairs worse (by more than NOISE)."""
        from inference.versions import BASE, Versions
        versions = Versions(self.settings, "reward")
        current, current_accuracy = versions.champion(), None
        if current != BASE:
            current_model, tokenizer = load_reward_model(self.settings)
            current_accuracy = pairwise_accuracy(current_model, tokenizer, self.test or self.train)
            current_model = None
        promoted = current_accuracy is None or self.accuracy >= current_accuracy - NOISE
        version = versions.publish(version_id, partial, {
            **manifest,
            "metrics": {"pairwise_accuracy": self.accuracy,
                        "measured_on": "held-out pairs" if self.test else "the training pairs (none held out)"},
            "verdict": "promoted" if promoted else "refused",
            "gate": {"champion": current, "champion_accuracy": current_accuracy, "noise": NOISE}})
        if promoted:
            versions.set_champion(version.id, "promoted", accuracy=self.accuracy)
        else:
            versions.record("refused", version.id, accuracy=self.accuracy, champion_accuracy=current_accuracy)
        return version.manifest


def train_reward(settings: Settings, config, report: Report) -> dict | None:
    """Train a reward model on the train split of the pairs; it replaces the one in use unless it ranks the
    held-out pairs worse. Returns its manifest, or None when one was trained from the same data and settings."""
    return RewardRun(settings, config, report).run()


def score(settings: Settings, question: str, answer: str, passages: list[str]) -> float:
    """The reward model's score of `answer` to `question` asked with `passages`."""
    from training.examples import assistant_turn, grounded_prompt
    if not question.strip() or not answer.strip():
        raise ApprentiError("give both a question and an answer to score")
    model, tokenizer = load_reward_model(settings)
    return scores(model, tokenizer, [grounded_prompt(question, passages) + assistant_turn(answer)])[0]
