"""Follow-up retrieval with the real embeddings, over a small knowledge base of three documents."""
import pytest

from common.config import DEFAULT_RELEVANCE_THRESHOLD, Settings
from conversation.follow_up import follow_up_passages

DOCUMENTS = {
    "hold": "To put a package on hold with apt, run apt-mark hold package_name; apt then keeps its installed "
            "version through upgrades. To remove the hold, run apt-mark unhold package_name.",
    "sid": "Sid is the unstable distribution of Debian, where most packages are first uploaded. It is never "
           "released directly: packages move to testing first. The name comes from the boy next door in the "
           "Toy Story film, who broke toys.",
    "random": "The standard module random implements a random number generator: random.random() returns a "
              "float in [0, 1), choice(S) picks an element of a sequence and shuffle(L) shuffles a list in place.",
}


@pytest.fixture
def search(kb):
    for doc_id, text in DOCUMENTS.items():
        kb.add(text, doc_id)
    settings = Settings.load()
    assert settings.relevance_threshold == DEFAULT_RELEVANCE_THRESHOLD
    return lambda query: [passage for passage in kb.search(query, settings.top_k)
                          if passage.score >= settings.relevance_threshold]


def conversation(*turns: str) -> list[dict]:
    """User questions, each followed by an assistant answer (its content does not steer the search)."""
    return [message for question in turns
            for message in ({"role": "user", "content": question}, {"role": "assistant", "content": "..."})]


def doc_ids(passages) -> list[str]:
    return [passage.doc_id for passage in passages]


def test_a_first_question_is_searched_alone(search):
    assert follow_up_passages("How do I put a package on hold?", [], search) == search(
        "How do I put a package on hold?")


def test_a_follow_up_that_names_nothing_finds_the_previous_turns_document(search):
    assert search("Will it ever be released?") == []  # alone, it says too little
    history = conversation("What is sid in Debian?")
    assert doc_ids(follow_up_passages("Will it ever be released?", history, search))[0] == "sid"
    history = conversation("How do I put a package on hold?")
    assert doc_ids(follow_up_passages("And how do I remove it afterwards?", history, search))[0] == "hold"


def test_a_follow_up_that_nothing_answers_is_still_refused(search):
    history = conversation("What is sid in Debian?", "Will it ever be released?")
    assert follow_up_passages("And who painted the Mona Lisa?", history, search) == []
    history = conversation("Comment mettre un paquet en hold ?")
    assert follow_up_passages("Et qui a peint la Joconde ?", history, search) == []


def test_a_new_question_mid_conversation_finds_its_own_document(search):
    history = conversation("How do I put a package on hold?", "And how do I remove it afterwards?")
    assert doc_ids(follow_up_passages("How do I shuffle a list in Python?", history, search))[0] == "random"
