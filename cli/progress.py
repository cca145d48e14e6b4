"""Progress bars (with ETA) for the long jobs: training, ingest and evaluation."""
from __future__ import annotations


class TrainingProgress:
    """Renders a training subprocess's events: a summary line, then a bar with loss, tokens/s and ETA."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm
        if event["event"] == "start":
            print(f"Fine-tuning {event['model']} ({event['method']}, {event['dtype']} on {event['device']}) "
                  f"on {event['entries']} entries: {event['steps']} steps.", flush=True)
            self.bar = tqdm(total=event["steps"], unit="step", dynamic_ncols=True)
        elif event["event"] == "step" and self.bar is not None:
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.3f}", tok_s=f"{event['tokens_per_second']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
            self.bars[stage] = tqdm(total=event["total"], desc=stage, unit=self.UNITS.get(stage, "item"),
                                    dynamic_ncols=True)
        bar = self.bars[stage]
        bar.update(event["done"] - bar.n)
        if "documents" in event:
            bar.set_postfix(documents=f"{event['documents']}/{event['documents_total']}")

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
