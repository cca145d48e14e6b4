"""Progress bars (with ETA) for the long jobs: training, ingest and evaluation."""
from __future__ import annotations


class TrainingProgress:
    """Renders a training subprocess's events: a summary line, then a bar with loss, tokens/s and ETA; then
    the promotion gate's evaluation of the candidate and the champion, a bar each."""

    def __init__(self):
        self.bar = None
        self.evaluation = StageProgress()

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm
        if event["event"] == "start":
            self.close()
            print(f"Training {event['model']} ({event['method']}, {event['dtype']} on {event['device']}) "
                  f"on {event['entries']} {event.get('what', 'entries')}: {event['steps']} steps.", flush=True)
            self.bar = tqdm(total=event["steps"], unit="step", dynamic_ncols=True)
        elif event["event"] == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            figures = {"loss": f"{event['loss']:.3f}"}
            figures.update({"reward": f"{event['reward']:.3f}"} if "reward" in event else
                           {"tok_s": f"{event['tokens_per_second']:.0f}"})
            self.bar.set_postfix(**figures)
        elif event["event"] in ("notice", "stage"):
            self.close()
            print(event.get("message") or f"{event['stage'][:1].upper()}{event['stage'][1:]}...", flush=True)
        elif event["event"] == "evaluate":
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            self.evaluation({**event, "stage": f"gate, {event['model']}: {event['stage']}"})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.evaluation.close()
        self.evaluation.bars.clear()


class StageProgress:
    """A bar per stage of a long job (an ingest: files read, then chunks embedded and written, with the
    documents done; an evaluation: questions answered), each with an ETA."""
    UNITS = {"reading": "file", "embedding": "chunk", "questions": "question"}

    def __init__(self):
        self.bars = {}

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm
        stage = event["stage"]
        if stage not in self.bars:
            self.close()
            unit = self.UNITS.get(stage.split(": ")[-1], "item")
            self.bars[stage] = tqdm(total=event["total"], desc=stage, unit=unit, dynamic_ncols=True)
        bar = self.bars[stage]
        bar.update(event["done"] - bar.n)
        if "documents" in event:
            bar.set_postfix(documents=f"{event['documents']}/{event['documents_total']}")

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
