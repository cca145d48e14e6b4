"""Opening the Chroma collection: embedded in the data dir, or on a server.

chromadb's own client, not langchain_chroma's wrapper: the knowledge base embeds and writes itself, and the
wrapper's import (sentence-transformers' utilities, sklearn) cost a cold `ask` 0.7 s."""
from __future__ import annotations

import os
from pathlib import Path

from common.errors import ApprentiError
from common.files import file_lock

COLLECTION = "apprenti_knowledge"
NEXT = f"{COLLECTION}-next"  # the store embedded again by `reembed`, until it replaces the one in use
WHOLE = "apprenti:whole"


def open_collection(directory: Path, server_url: str | None):
    """The Chroma client and the collection, created if new. Two processes creating a new store at once would both create its
    tables: one waits for the other (a read-only store needs no creating, and opening it says what is wrong)."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb

    def open_store():
        client = server_client(server_url) if server_url else chromadb.PersistentClient(path=str(directory))
        finish_swap(client)
        return client, client.get_or_create_collection(COLLECTION, metadata={"hnsw:space": "cosine"},
                                                       embedding_function=None)

    if server_url is None and os.access(directory, os.W_OK):
        with file_lock(directory / ".open.lock"):
            return open_store()
    return open_store()


def next_collection(client, metadata: dict):
    """Where `reembed` writes the store's chunks again, beside the collection in use until it is whole."""
    return client.get_or_create_collection(NEXT, metadata={"hnsw:space": "cosine", **metadata},
                                           embedding_function=None)


def swap_in_next(client) -> None:
    """The next collection, whole, takes the place of the one in use. Marked whole first, so that a crash
    between the two steps below is finished by the next open (finish_swap)."""
    following = client.get_collection(NEXT)
    following.modify(metadata={**settable(following.metadata), WHOLE: True})
    finish_swap(client)


def finish_swap(client) -> None:
    try:
        following = client.get_collection(NEXT)
    except Exception:  # chromadb raises NotFoundError, or ValueError on older servers: no re-embedding under way
        return
    if not (following.metadata or {}).get(WHOLE):
        return  # a re-embedding interrupted: `reembed` goes on with it
    if COLLECTION in {getattr(collection, "name", collection) for collection in client.list_collections()}:
        client.delete_collection(COLLECTION)
    following.modify(name=COLLECTION, metadata={key: value for key, value in settable(following.metadata).items()
                                                if key != WHOLE})


def settable(metadata: dict | None) -> dict:
    """A collection's metadata as modify() takes it back: its distance, set at creation, cannot be given again."""
    return {key: value for key, value in (metadata or {}).items() if key != "hnsw:space"}


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
