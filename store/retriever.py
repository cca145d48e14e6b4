"""The knowledge base as a LangChain retriever, for a LangChain chain of the user's own (Apprenti's answers
search the knowledge base directly: langchain_core's import would cost every cold `ask` 0.45 s)."""
from __future__ import annotations

import functools


@functools.cache
def retriever_class():
    """Built on first use: langchain_core is imported only when a retriever is asked for."""
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class KnowledgeRetriever(BaseRetriever):
        """A LangChain retriever that keeps what the stock one drops: each chunk's id, source and fused score,
        and only the chunks at or above the relevance threshold."""
        knowledge_base: object
        k: int = 4
        threshold: float = 0.0

        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=passage.text, id=passage.id,
                             metadata={"doc_id": passage.doc_id, "score": passage.score, "source": passage.source})
                    for passage in self.knowledge_base.relevant(query, self.k, self.threshold)]

    return KnowledgeRetriever
