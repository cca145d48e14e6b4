"""Speed and memory of Apprenti on this machine; prints one line per figure.

    .venv/bin/python bench/run_all.py [--skip-tinyllama]       (or: make bench)

Measures, for the bundled SmolLM2-135M-Instruct and for a random model of TinyLlama-1.1B's shape: model
load, time to first token on a 300-token prompt and decode tokens/s; and once: seconds to the menu,
knowledge-base add (chunks/s) and query (ms). Fine-tuning speed and memory: bench/training_speed.py.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def report(name: str, value: float, unit: str) -> None:
    print(f"{name:<55} {value:>10.2f} {unit}", flush=True)


def seconds_to_menu(home: Path) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "cli_app.py")], input="5\n", capture_output=True, text=True,
                       env={**os.environ, "APPRENTI_HOME": str(home)}, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tinyllama_shaped(folder: Path, tokenizer_folder: Path) -> Path:
    """TinyLlama-1.1B's shape (22 layers, 2048 wide, 5632 MLP, 32 heads, 4 KV heads) with random weights;
    its vocabulary is the bundled tokenizer's (49,152 tokens against TinyLlama's 32,000)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                         max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def generation_figures(label: str, folder: Path) -> None:
    import torch
    from inference.locate import ModelSource
    from inference.transformers_model import ChatModel
    model = ChatModel(ModelSource(label, folder))
    report(f"{label}: model load", model.load_seconds, "s")
    prompt = torch.randint(100, 20000, (1, 300))
    arguments = dict(attention_mask=torch.ones_like(prompt), do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.model.generate(prompt[:, :20], max_new_tokens=2, **arguments | {"attention_mask": None})  # warm-up
        started = time.perf_counter()
        model.model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **arguments)
        first_token = time.perf_counter() - started
        started = time.perf_counter()
        model.model.generate(prompt, max_new_tokens=65, min_new_tokens=65, **arguments)
        decode = 64 / (time.perf_counter() - started - first_token)
    report(f"{label}: time to first token, 300-token prompt ({model.dtype})", first_token, "s")
    report(f"{label}: decode", decode, "tokens/s")


def knowledge_base_figures(home: Path) -> None:
    from common.config import Settings
    from knowledge_base import KnowledgeBase
    from store.embeddings import embeddings_for
    kb = KnowledgeBase(home / "chroma_db_store", embeddings_for(Settings.load(home=home)))
    documents = [f"Note {i}: the meeting about project {i % 37} moved to room {i % 11}, floor {i % 5}. " * 6
                 for i in range(400)]
    started = time.perf_counter()
    for i, text in enumerate(documents):
        kb.add(text, f"note-{i}")
    report(f"knowledge base: add, one {len(documents[0])}-character document at a time",
           kb.count_chunks() / (time.perf_counter() - started), "chunks/s")
    long_text = "\n\n".join(documents)
    started = time.perf_counter()
    chunks = len(kb.add(long_text, "long"))
    report(f"knowledge base: add, one document of {chunks} chunks (batched)",
           chunks / (time.perf_counter() - started), "chunks/s")
    questions = [f"Which room is the meeting about project {i}?" for i in range(50)]
    started = time.perf_counter()
    for question in questions:
        kb.search(question, 4)
    report(f"knowledge base: search (hybrid), top 4 of {kb.count_chunks()} chunks",
           (time.perf_counter() - started) / len(questions) * 1000, "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tinyllama", action="store_true", help="only the bundled model")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        report("seconds to the menu (python cli_app.py, then 5)", seconds_to_menu(scratch), "s")
        from common.config import Settings
        from inference.locate import bundled_chat_model
        bundled = bundled_chat_model(Settings.load(home=ROOT).models_dir)
        generation_figures("SmolLM2-135M (bundled)", bundled)
        knowledge_base_figures(scratch)
        if not arguments.skip_tinyllama:
            folder = tinyllama_shaped(scratch / "tinyllama-shaped", bundled)
            generation_figures("TinyLlama-1.1B-shaped", folder)


if __name__ == "__main__":
    main()
