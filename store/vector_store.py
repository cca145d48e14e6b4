"""Opening the Chroma collection (through langchain_chroma): embedded in the data dir, or on a server."""
from __future__ import annotations

import os
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from common.files import file_lock

COLLECTION = "apprenti_knowledge"


def embeddings_for(settings: Settings):
    from langchain_huggingface import HuggingFaceEmbeddings
    from inference.loading import quiet_transformers
    from inference.locate import resolve_embedding_model
    source = resolve_embedding_model(settings)
    with quiet_transformers():
        return HuggingFaceEmbeddings(model_name=str(source.path), encode_kwargs={"normalize_embeddings": True})


def open_collection(directory: Path, server_url: str | None):
    """The collection, created if new. Two processes creating a new store at once would both create its
    tables: one waits for the other (a read-only store needs no creating, and opening it says what is wrong)."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from langchain_chroma import Chroma
    client = server_client(server_url) if server_url else None

    def open_store():
        return Chroma(collection_name=COLLECTION, client=client,
                      persist_directory=None if client else str(directory),
                      collection_metadata={"hnsw:space": "cosine"})

    if client is None and os.access(directory, os.W_OK):
        with file_lock(directory / ".open.lock"):
            return open_store()
    return open_store()


def server_client(url: str):
    from urllib.parse import urlsplit
    import chromadb
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise ApprentiError(f"bad Chroma server address '{url}': use http://host:port")
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=parts.port or (443 if parts.scheme == "https" else 8000),
                                     ssl=parts.scheme == "https")
        client.heartbeat()
    except Exception as error:
        raise ApprentiError(f"cannot reach the Chroma server at {url} ({type(error).__name__}): start it "
                            f"(chroma run --path DIR --port PORT) or unset APPRENTI_CHROMA_URL") from None
    return client


def server_slug(url: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in url.split("://")[-1]).strip("-")
