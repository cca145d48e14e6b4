"""The inference backends side by side on this machine: what picks the fast backend (README, "Fast answers").

    .venv/bin/python bench/inference.py [--parts speed,quality,taught,embeddings] [--skip-tinyllama]
                                        [--candidates onnx,...]                        (make bench runs it)

speed: for the bundled SmolLM2-135M-Instruct and a random model of TinyLlama-1.1B's shape, each candidate in
  a process of its own: load seconds, time to first token on a 300-token prompt, decode tokens/s (128 new
  tokens, greedy, median of 3), the process's peak memory, and the seconds its package takes to install
  (pip, without dependencies, into bench/.cache; a candidate that cannot be installed or cannot convert the
  model says why and is skipped). Candidates: transformers fp32, bf16, bf16 with a static cache and
  torch.compile; ONNX Runtime GenAI int4 and int8 (the model builder); llama.cpp (llama-cpp-python, built
  from source at install; the bundled model's own Q4_1 GGUF); CTranslate2 int8; OpenVINO through
  optimum-intel (pip is asked whether it installs beside Apprenti's transformers).
quality: on the shipped QA set, through Apprenti's own answer path (Assistant.ask, as `evaluate` asks), with each
  APPRENTI_BACKEND (onnx-int8, onnx-int4, transformers): answer_contains, answer F1, supported, refusal
  accuracy; the answers that loop (bench/decoding.py's measure: a run of 4 words three times) or run to the
  length limit; and the decode tokens/s of those same answers (from each answer's first piece to its last).
taught: two invented facts of bench/taught_facts.jsonl taught as a user teaches them (`learn`, then one
  `finetune`, the gate off; a few minutes), then their held-out questions asked closed-book (as
  bench/teaching.py asks) by the base model and the taught version on each backend; the version's int8 and
  int4 forms are converted from it on first load, as a user's are. Ends with one table of both parts.
embeddings: the embedding model in use against ONNX Runtime (fp32, int8) and bf16: chunks/s, vectors moved.
"""
import argparse
import json
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
CACHE = ROOT / "bench" / ".cache"
PROMPT_TOKENS, NEW_TOKENS, RUNS = 300, 128, 3
# The candidates' packages, installed on demand (transformers and ONNX Runtime GenAI are requirements).
PACKAGES = {"llama.cpp": ["llama-cpp-python==0.3.36", "diskcache==5.6.3"], "ctranslate2": ["ctranslate2==4.8.5"]}


def installed(packages: list[str]) -> tuple[Path | None, float | None, str]:
    """The folder `packages` are installed in for the bench, the seconds their install took, and why not."""
    name = packages[0].split("==")[0]
    folder, record = CACHE / name, CACHE / f"{name}.install.json"
    if not record.is_file():
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--no-deps", "--target", str(folder), *packages], capture_output=True, text=True)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"rc": done.returncode, "seconds": time.perf_counter() - started,
                                      "error": done.stderr.strip().splitlines()[-1:] if done.returncode else []}))
    result = json.loads(record.read_text())
    if result["rc"] != 0:
        return None, None, f"install failed: {' '.join(result.get('error') or ['see pip'])}"
    return folder, result["seconds"], ""


# ---------------------------------------------------------------- one candidate, in its own process

def measure(candidate: str, folder: Path, gguf: str | None) -> dict:
    """Load, then time to first token and decode speed on random prompt tokens; runs in a child process."""
    import random
    random.seed(0)
    prompt = [random.randrange(100, 20000) for _ in range(PROMPT_TOKENS)]
    started = time.perf_counter()
    generate = loader(candidate, folder, gguf)
    load = time.perf_counter() - started
    generate(prompt[:8], 4)  # warm-up (torch.compile compiles here)
    firsts, rates = [], []
    for _ in range(RUNS):
        times = generate(prompt, NEW_TOKENS)
        firsts.append(times[0])
        rates.append((len(times) - 1) / (times[-1] - times[0]))
    return {"load_s": load, "ttft_s": statistics.median(firsts), "decode_tok_s": statistics.median(rates)}


def loader(candidate: str, folder: Path, gguf: str | None):
    """A function (prompt ids, new tokens) -> the times at which each new token was made."""
    threads = len(os.sched_getaffinity(0))
    if candidate.startswith("transformers"):
        import torch
        from transformers import AutoModelForCausalLM
        dtype = torch.float32 if "fp32" in candidate else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        extra = {}
        if "compile" in candidate:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)
            extra = {"cache_implementation": "static"}

        def generate(prompt, new):
            from transformers import StoppingCriteria
            times, started = [], time.perf_counter()

            class Clock(StoppingCriteria):
                def __call__(self, input_ids, scores, **kwargs):
                    times.append(time.perf_counter() - started)
                    return False
            with torch.inference_mode():
                model.generate(torch.tensor([prompt]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               stopping_criteria=[Clock()], pad_token_id=0, **extra)
            return times
        return generate
    if candidate.startswith("onnx"):
        import onnxruntime_genai as og
        config = og.Config(str(folder))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        model = og.Model(config)

        def generate(prompt, new):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(prompt) + new, min_length=len(prompt) + new)
            generator, times, started = og.Generator(model, params), [], time.perf_counter()
            generator.append_tokens(prompt)
            while not generator.is_done():
                generator.generate_next_token()
                times.append(time.perf_counter() - started)
            return times
        return generate
    if candidate.startswith("llama.cpp"):
        from llama_cpp import Llama
        model = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, verbose=False)

        def generate(prompt, new):
            model.reset()
            times, started = [], time.perf_counter()
            for _ in model.generate(prompt, temp=0.0):
                times.append(time.perf_counter() - started)
                if len(times) == new:
                    break
            return times
        return generate
    if candidate.startswith("ctranslate2"):
        import ctranslate2
        generator_ = ctranslate2.Generator(str(folder), device="cpu", intra_threads=threads, inter_threads=1)

        def generate(prompt, new):
            times, started = [], time.perf_counter()
            tokens = [str(token) for token in prompt]  # ids as tokens: the converted vocabulary is by id
            for _ in generator_.generate_tokens(tokens, max_length=new, sampling_topk=1, end_token=[]):
                times.append(time.perf_counter() - started)
            return times
        return generate
    raise ValueError(candidate)


def child(arguments) -> None:
    figures = measure(arguments.child, Path(arguments.folder), arguments.gguf)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    print(json.dumps({**figures, "peak_gib": peak / 2**20}))


# ---------------------------------------------------------------- conversions

def converted(candidate: str, folder: Path, scratch: Path) -> tuple[Path | None, str]:
    """The model in the candidate's own form, made once into `scratch`; or None and why."""
    target = scratch / f"{folder.name}-{candidate.replace(' ', '-')}"
    if candidate.startswith(("transformers", "llama.cpp")) or target.exists():
        return (folder if candidate.startswith("transformers") else target), ""
    if candidate.startswith("onnx"):
        precision = candidate.split()[-1]
        done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder),
                               "-o", str(target), "-p", precision, "-e", "cpu", "-c", str(scratch / "cache")],
                              capture_output=True, text=True)
        return (target, "") if done.returncode == 0 else (None, done.stderr.strip().splitlines()[-1])
    if candidate.startswith("ctranslate2"):
        package, _, why = installed(PACKAGES["ctranslate2"])
        if package is None:
            return None, why
        done = subprocess.run([sys.executable, "-c", "import sys; from ctranslate2.converters import "
                               "TransformersConverter as C; C(sys.argv[1]).convert(sys.argv[2], quantization='int8')",
                               str(folder), str(target)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(package)})
        return (target, "") if done.returncode == 0 else (None, done.stderr.strip().splitlines()[-1])
    raise ValueError(candidate)


def speed(label: str, folder: Path, gguf: str | None, scratch: Path, only: str) -> list[dict]:
    rows = []
    candidates = ["transformers fp32", "transformers bf16", "transformers bf16 compile", "onnx int4", "onnx int8",
                  "ctranslate2 int8", "openvino int4"] + (["llama.cpp Q4_1"] if gguf else [])
    for candidate in [name for name in candidates if not only or name.split()[0] in only.split(",")]:
        row = {"model": label, "candidate": candidate}
        if candidate.startswith("openvino"):
            rows.append({**row, "skipped": openvino_conflict()})
            print_row(rows[-1])
            continue
        package_name = PACKAGES.get(candidate.split()[0])
        path = None
        if package_name:
            path, row["install_s"], why = installed(package_name)
            if path is None:
                rows.append({**row, "skipped": why})
                print_row(rows[-1])
                continue
        form, why = converted(candidate, folder, scratch)
        if form is None:
            rows.append({**row, "skipped": f"conversion failed: {why}"})
            print_row(rows[-1])
            continue
        env = {**os.environ, **({"PYTHONPATH": str(path)} if path else {})}
        done = subprocess.run([sys.executable, __file__, "--child", candidate, "--folder", str(form),
                               *(["--gguf", gguf] if gguf else [])], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            row["skipped"] = "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
        else:
            row |= json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print_row(row)
    return rows


def openvino_conflict() -> str:
    """OpenVINO comes through optimum-intel, which must live beside Apprenti's transformers: what pip says."""
    import transformers
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
                           "optimum-intel[openvino]", f"transformers=={transformers.__version__}"],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return "installable beside this transformers: not measured yet"
    lines = [line.strip() for line in done.stderr.splitlines() if "depends on transformers" in line]
    return f"cannot install beside transformers {transformers.__version__}: " + (lines[-1] if lines else "conflict")


def print_row(row: dict) -> None:
    if "skipped" in row:
        print(f"{row['model']:<28} {row['candidate']:<26} skipped: {row['skipped'][:120]}", flush=True)
        return
    install = f"{row['install_s']:>7.0f} s" if row.get("install_s") else "   (req.)"
    print(f"{row['model']:<28} {row['candidate']:<26} decode {row['decode_tok_s']:>7.1f} tok/s   "
          f"first token {row['ttft_s']:>6.3f} s   peak {row['peak_gib']:>5.2f} GiB   load {row['load_s']:>6.2f} s   "
          f"install {install}", flush=True)


# ---------------------------------------------------------------- quality, and a fact taught by fine-tuning

TAUGHT_FACTS = 2  # of bench/taught_facts.jsonl, taught in one fine-tuning: a few minutes here


class DecodeClock:
    """Stands in for an Assistant where evaluation.evaluate.score_question asks it: each answer the model makes
    is kept with its tokens and the seconds from its first piece to its last, so the decode speed is that of
    the very answers scored (the prompt's reading left out)."""

    def __init__(self, assistant):
        self.assistant, self.answers = assistant, []

    def ask(self, question: str, **options):
        times = []
        answer = self.assistant.ask(question, on_text=lambda piece: times.append(time.perf_counter()), **options)
        if not answer.refused:  # the assistant's own refusal asked no model
            self.answers.append({"text": answer.answer, "tokens": answer.completion_tokens,
                                 "seconds": times[-1] - times[0] if len(times) > 1 else 0.0})
        return answer


def quality(home: Path) -> dict[str, dict]:
    """On the shipped QA set, through Assistant.ask as `evaluate` asks it, on each backend: answer_contains,
    answer F1, supported and refusal accuracy; the answers that loop (bench/decoding.py's measure) or run to
    the length limit; and the decode tokens/s of those same answers."""
    from bench.decoding import loops
    from common.config import BACKENDS, Settings
    from evaluation.evaluate import answer_scores, score_question
    from evaluation.qa_set import SHIPPED_QA, read_qa_set
    from rag_module import Assistant
    questions, _ = read_qa_set(SHIPPED_QA)
    results = {}
    for backend in BACKENDS:
        assistant = Assistant(Settings.load(home=home, backend=backend), log_answers=False)
        assistant.model  # loaded (and converted, the first time) before the clock starts
        clock, started = DecodeClock(assistant), time.perf_counter()
        rows = [score_question(clock, question) for question in questions]
        seconds = time.perf_counter() - started
        made = clock.answers
        timed = [answer for answer in made if answer["seconds"] > 0]
        results[backend] = {
            **answer_scores(rows), "model": f"{assistant.model.name}, {assistant.model.dtype}",
            "questions": len(rows), "answerable": sum(row["answerable"] for row in rows), "made": len(made),
            "loops": sum(loops(answer["text"]) for answer in made),
            "at_limit": sum(answer["tokens"] >= assistant.answer_tokens - 1 for answer in made),
            "decode_tok_s": sum(a["tokens"] - 1 for a in timed) / sum(a["seconds"] for a in timed),
            "answer_tokens": sum(answer["tokens"] for answer in made) / len(made), "seconds": seconds, "rows": rows}
        result = results[backend]
        print(f"quality, {backend:<13} ({result['model']}): answer_contains {result['answer_contains']:.3f}, "
              f"answer_f1 {result['answer_f1']:.3f}, supported {result['supported']:.3f}, refusal_accuracy "
              f"{result['refusal_accuracy']:.3f} (answered rightly {result['answered_rightly']:.3f}, refused "
              f"rightly {result['refused_rightly']:.3f}); of the model's {len(made)} answers {result['loops']} "
              f"loop, {result['at_limit']} run to the {assistant.answer_tokens}-token limit, "
              f"{result['answer_tokens']:.0f} tokens on average; decode {result['decode_tok_s']:.1f} tok/s "
              f"({len(rows)} questions, {seconds:.0f} s)", flush=True)
    return results


def taught(scratch: Path, bundled: Path) -> dict[str, dict]:
    """Facts taught as a user teaches them (`learn`, then `finetune`, the gate off: one fine-tuning), then
    their held-out questions (bench/taught_facts.jsonl, in other words than any training question) asked
    closed-book, as bench/teaching.py asks them, by the base model and the taught version on each backend:
    the version's converted forms are made in its folder on first load, as a user's would be."""
    from bench.teaching import FACTS, closed_book, right
    from common.config import BACKENDS, Settings
    from rag_module import Assistant
    home = scratch / "taught"
    (home / "models").mkdir(parents=True)
    (home / "models" / bundled.name).symlink_to(bundled)
    facts = [json.loads(line) for line in FACTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    facts = facts[:TAUGHT_FACTS]
    questions = [question for fact in facts for question in fact["questions"]]

    def asked(label: str) -> dict[str, dict]:
        results = {}
        for backend in BACKENDS:
            assistant = Assistant(Settings.load(home=home, backend=backend), log_answers=False)
            answers = [(question, closed_book(assistant, question), reference) for question, reference in questions]
            results[backend] = {"right": sum(right(answer, reference) for _, answer, reference in answers),
                                "questions": len(answers)}
            print(f"taught facts, {label}, {backend} ({assistant.model.name}, {assistant.model.dtype}): "
                  f"{results[backend]['right']}/{len(answers)}", flush=True)
            for question, answer, reference in answers:
                mark = "ok" if right(answer, reference) else "NO"
                print(f"    {mark}  {question} -> {' '.join(answer.split())[:110]}", flush=True)
        return results

    before = asked("base model")
    environment = {**os.environ, "APPRENTI_HOME": str(home), "APPRENTI_GATE": "false"}
    for fact in facts:
        subprocess.run([sys.executable, str(ROOT / "cli_app.py"), "learn", fact["entry"]], env=environment,
                       check=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli_app.py"), "finetune"], env=environment, check=True)
    print(f"taught {len(facts)} facts: `finetune` took {time.perf_counter() - started:.0f} s", flush=True)
    after = asked("taught version")
    return {backend: {**after[backend], "before": before[backend]["right"]} for backend in BACKENDS}


def table(qualities: dict[str, dict], facts: dict[str, dict]) -> None:
    """Both parts' figures, one row a backend, as the README shows them."""
    print("\n| backend | answer_contains | answer F1 | supported | refusal accuracy | degenerate answers | tok/s | "
          "taught-fact questions right |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backend in qualities or facts:
        scores, recalled = qualities.get(backend), facts.get(backend)
        cells = ([f"{scores['answer_contains']:.3f}", f"{scores['answer_f1']:.3f}", f"{scores['supported']:.3f}",
                  f"{scores['refusal_accuracy']:.3f}", f"{scores['loops']}/{scores['made']}",
                  f"{scores['decode_tok_s']:.1f}"] if scores else [""] * 6)
        cells.append(f"{recalled['right']}/{recalled['questions']} (base model {recalled['before']})"
                     if recalled else "")
        print(f"| {backend} | " + " | ".join(cells) + " |")


def embeddings(scratch: Path) -> None:
    """The embedding model (all-MiniLM-L6-v2) as ingest runs it, against ONNX Runtime (fp32, and int8 by
    dynamic quantisation) and bf16: chunks/s on 256 chunks of ~70 words, and how far the vectors move."""
    import numpy as np
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer
    from inference.locate import BUNDLED_EMBEDDINGS_PACKAGE, package_dir
    folder = package_dir(BUNDLED_EMBEDDINGS_PACKAGE) / "model"
    texts = [f"Chunk {number}: " + "the ferry on Lake Quillmoor leaves at 7:15 every morning and returns " * 4
             for number in range(256)]

    def timed(embed) -> tuple[float, np.ndarray]:
        embed(texts[:8])  # warm-up
        started = time.perf_counter()
        vectors = np.concatenate([np.asarray(embed(texts[i:i + 32]), dtype=np.float32) for i in range(0, 256, 32)])
        return len(texts) / (time.perf_counter() - started), vectors

    reference = SentenceTransformer(str(folder), device="cpu")
    base_rate, base = timed(lambda batch: reference.encode(batch, normalize_embeddings=True))
    print(f"embeddings, sentence-transformers fp32 (in use)  {base_rate:7.1f} chunks/s", flush=True)

    def compare(name: str, embed) -> None:
        rate, vectors = timed(embed)
        print(f"embeddings, {name:<36} {rate:7.1f} chunks/s  ({rate / base_rate:.2f}x; lowest cosine to the "
              f"vectors in use {(vectors * base).sum(1).min():.4f})", flush=True)

    half = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.bfloat16})
    compare("sentence-transformers bf16", lambda batch: half.encode(batch, normalize_embeddings=True))
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    class Hidden(torch.nn.Module):  # the last hidden state alone, from positional inputs: what ONNX exports
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tokenizer(texts[:2], padding=True, return_tensors="pt")
    exported = scratch / "minilm.onnx"
    torch.onnx.export(Hidden(), tuple(sample[name] for name in names), str(exported), input_names=names,
                      output_names=["hidden"], dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names + ["hidden"]},
                      opset_version=17, dynamo=False)
    quantize_dynamic(str(exported), str(scratch / "minilm-int8.onnx"), weight_type=QuantType.QInt8)
    for name, path in (("ONNX Runtime fp32", exported), ("ONNX Runtime int8", scratch / "minilm-int8.onnx")):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def embed(batch, session=session):
            encoded = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="np")
            hidden = session.run(None, {name: encoded[name].astype(np.int64) for name in names})[0]
            mask = encoded["attention_mask"][..., None]
            pooled = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, then unit length: as the model card
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        compare(name, embed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="speed,quality,taught,embeddings")
    parser.add_argument("--skip-tinyllama", action="store_true")
    parser.add_argument("--candidates", default="", help="e.g. llama.cpp,onnx (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments)
    from common.config import Settings
    from inference.locate import BUNDLED_CHAT_GGUF, BUNDLED_CHAT_PACKAGE, bundled_chat_model, package_dir
    with tempfile.TemporaryDirectory(prefix="apprenti-bench-") as scratch:
        scratch = Path(scratch)
        home = scratch / "home"
        (home / "models").mkdir(parents=True)
        bundled = bundled_chat_model(Settings.load(home=ROOT).models_dir)  # converted once, kept
        (home / "models" / bundled.name).symlink_to(bundled)
        parts = arguments.parts.split(",")
        if "speed" in parts:
            speed("SmolLM2-135M (bundled)", bundled, str(package_dir(BUNDLED_CHAT_PACKAGE) / BUNDLED_CHAT_GGUF),
                  scratch, arguments.candidates)
            if not arguments.skip_tinyllama:
                from run_all import tinyllama_shaped
                speed("TinyLlama-1.1B-shaped", tinyllama_shaped(scratch / "tinyllama", bundled), None, scratch,
                      arguments.candidates)
        qualities = quality(home) if "quality" in parts else {}
        facts = taught(scratch, bundled) if "taught" in parts else {}
        if qualities or facts:
            table(qualities, facts)
        if "embeddings" in parts:
            embeddings(scratch)


if __name__ == "__main__":
    main()
