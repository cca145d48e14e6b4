"""Scale: ingest of 10,000 chunks against the raw embedding speed of the same chunks, and search latency at
10,000 and 100,000 chunks, in the embedded store and against a Chroma server on loopback.

The corpus is the Python documentation (python3-doc, PSF licence), real text. The 100,000-chunk stores
repeat the 10,000 real chunks ten times with their vectors moved by a little noise: search cost depends on
the number of chunks and words, not on where they come from, and embedding 100,000 chunks on 2 cores would
take most of an hour.

    apt-get install python3-doc        # once (make bench does it)
    .venv/bin/python bench/scale.py [--chunks 10000] [--queries 200]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

PYTHON_DOCS = Path("/usr/share/doc/python3-doc/html")


def pick_files(target_chunks: int) -> tuple[list[Path], int]:
    """Pages of the Python documentation, in name order, until they make `target_chunks` chunks."""
    from store.documents import chunk_document, read_file
    files, chunks = [], 0
    for page in sorted(PYTHON_DOCS.rglob("*.html")):
        count = len(chunk_document(read_file(page)[0][0], "now"))
        if chunks + count > target_chunks:
            continue
        files.append(page)
        chunks += count
        if chunks >= target_chunks * 0.99:
            break
    return files, chunks


def percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return (f"p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, p95 {ordered[int(len(ordered) * 0.95)] * 1000:.0f} ms "
            f"({len(ordered)} queries, hybrid, k=4)")


def search_latency(kb, queries: list[str]) -> str:
    kb.search("warm up", 4)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        kb.search(query, 4)
        latencies.append(time.perf_counter() - started)
    return percentiles(latencies)


def copy_chunks(source, target, copies: int, noise: float = 0.02) -> None:
    """Every chunk of `source` into `target` `copies` times, ids suffixed, vectors moved a little."""
    import numpy as np
    from store.documents import Chunk
    rng = np.random.default_rng(0)
    count = source.count_chunks()
    for offset in range(0, count, 2000):
        page = source.collection.get(include=["documents", "metadatas", "embeddings"], limit=2000, offset=offset)
        vectors = np.asarray(page["embeddings"])
        for copy in range(copies):
            moved = vectors + rng.normal(0, noise, vectors.shape) if copy else vectors
            moved /= np.linalg.norm(moved, axis=1, keepdims=True)
            chunks = [Chunk(f"{chunk_id}~{copy}", text, {**metadata, "doc_id": f"{metadata['doc_id']}~{copy}"})
                      for chunk_id, text, metadata in zip(page["ids"], page["documents"], page["metadatas"])]
            target._write([], chunks, moved.tolist())


def start_server(folder: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([shutil.which("chroma", path=os.path.dirname(sys.executable)), "run", "--path",
                               str(folder), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return server, f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path, help="working folder, kept; an ingest already there is reused")
    arguments = parser.parse_args()
    if not PYTHON_DOCS.exists():
        print(f"missing {PYTHON_DOCS}: apt-get install python3-doc", file=sys.stderr)
        return 1
    from common.config import Settings
    from knowledge_base import KnowledgeBase
    from store.embeddings import embeddings_for
    work = arguments.work or Path(tempfile.mkdtemp(prefix="apprenti-scale-"))
    files, expected = pick_files(arguments.chunks)
    print(f"corpus: {len(files)} pages of the Python documentation, {expected} chunks", flush=True)

    home = work / "embedded"
    ingest_rate = None
    if not (home / "chroma_db_store").exists():
        # Ingest, as a user runs it, in its own process so that its peak memory is its own.
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "cli_app.py"), "ingest", *map(str, files)], cwd=ROOT,
                                env={**os.environ, "APPRENTI_HOME": str(home)}, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout, result.stderr, file=sys.stderr)
            return 1
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        ingest_rate = expected / seconds
        print(f"ingest: {expected} chunks in {seconds:.0f} s (whole command, model load included): "
              f"{expected / seconds:.1f} chunks/s; peak memory {peak:.2f} GiB", flush=True)
    kb = KnowledgeBase(home / "chroma_db_store", embeddings_for(Settings.load(home=home)))
    chunks = kb.count_chunks()

    texts = [text for _, text, _ in kb.chunks(include=("documents",))]
    texts = random.Random(0).sample(texts, min(len(texts), 2000))  # a sample gives the rate
    kb.embeddings.embed_documents(texts[:64])  # warm up
    started = time.perf_counter()
    for start in range(0, len(texts), 128):
        kb.embeddings.embed_documents(texts[start:start + 128])
    raw = time.perf_counter() - started
    print(f"raw embedding of {len(texts)} of the same chunks: {len(texts) / raw:.1f} chunks/s"
          + (f"; ingest reaches {ingest_rate / (len(texts) / raw):.0%} of it" if ingest_rate else ""), flush=True)

    questions = json.loads((ROOT / "bench" / "relevance_fixture.json").read_text())
    queries = [q for q, _ in questions["answerable"]] + questions["unanswerable"]
    queries += [f"How do I use the {Path(f).stem} module?" for f in files]
    random.Random(0).shuffle(queries)
    queries = (queries * (arguments.queries // len(queries) + 1))[:arguments.queries]
    print(f"search, embedded, {chunks} chunks: {search_latency(kb, queries)}", flush=True)

    for stale in ("embedded-100k", "server-data", "server-10k", "server-100k"):
        shutil.rmtree(work / stale, ignore_errors=True)
    big = KnowledgeBase(work / "embedded-100k" / "chroma_db_store", kb.embeddings)
    started = time.perf_counter()
    copy_chunks(kb, big, 10)
    print(f"(100k embedded store built in {time.perf_counter() - started:.0f} s)", flush=True)
    print(f"search, embedded, {big.count_chunks()} chunks: {search_latency(big, queries)}", flush=True)

    server, url = start_server(work / "server-data")
    try:
        remote = KnowledgeBase(work / "server-10k", kb.embeddings, server_url=url)
        copy_chunks(kb, remote, 1)
        print(f"search, server, {remote.count_chunks()} chunks: {search_latency(remote, queries)}", flush=True)
        started = time.perf_counter()
        remote_big = KnowledgeBase(work / "server-100k", kb.embeddings, server_url=url)
        copy_chunks(kb, remote_big, 10)  # the first copy lands on the chunks already there
        print(f"(100k server store built in {time.perf_counter() - started:.0f} s)", flush=True)
        print(f"search, server, {remote_big.count_chunks()} chunks: {search_latency(remote_big, queries)}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    if not arguments.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
