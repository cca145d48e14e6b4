"""English and French: which one a text is in, and the words of it that a keyword index should match.

The stop word lists are Snowball's (snowballstem.org), with French elided forms (l', d', qu'...) added;
the same lists tell the languages apart, since every sentence is full of them.
"""
from __future__ import annotations

import functools
import re
import unicodedata

LANGUAGES = ("en", "fr")
STEMMER_NAMES = {"en": "english", "fr": "french"}
STOP_WORDS = {
    "en": frozenset("""
        i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
        herself it its itself they them their theirs themselves what which who whom this that these those am is
        are was were be been being have has had having do does did doing would should could ought i'm you're
        he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd we'd they'd i'll you'll
        he'll she'll we'll they'll isn't aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't
        wouldn't shan't shouldn't can't cannot couldn't mustn't let's that's who's what's here's there's when's
        where's why's how's a an the and but if or because as until while of at by for with about against
        between into through during before after above below to from up down in out on off over under again
        further then once here there when where why how all any both each few more most other some such no nor
        not only own same so than too very s t can will just don should now
        """.split()),
    "fr": frozenset("""
        au aux avec ce ces dans de des du elle en et eux il ils je la le les leur lui ma mais me même mes moi mon
        ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une vos votre
        vous c d j l à m n s t y été étée étées étés étant étante étants étantes suis es est sommes êtes sont
        serai seras sera serons serez seront serais serait serions seriez seraient étais était étions étiez
        étaient fus fut fûmes fûtes furent sois soit soyons soyez soient fusse fusses fût fussions fussiez
        fussent ayant ayante ayantes ayants eu eue eues eus ai as avons avez ont aurai auras aura aurons aurez
        auront aurais aurait aurions auriez auraient avais avait avions aviez avaient eut eûmes eûtes eurent
        aie aies ait ayons ayez aient eusse eusses eût eussions eussiez eussent ceci cela celà cet cette ici ils
        les leurs quel quels quelle quelles sans soi quoi où comment pourquoi quand
        """.split()),
}
WORD = re.compile(r"[^\W_]+")  # letters and digits: apostrophes and hyphens split "l'archive", "est-ce"


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def detect_language(text: str) -> str:
    """'fr' or 'en', by counting each language's stop words (and accents, which English rarely has)."""
    tokens = words(text[:5000])
    french = sum(token in STOP_WORDS["fr"] for token in tokens) + len(re.findall(r"[éèêàùçôîœ]", text[:5000].lower()))
    english = sum(token in STOP_WORDS["en"] for token in tokens)
    return "fr" if french > english else "en"


@functools.cache
def stemmer(language: str):
    import snowballstemmer  # uses the C PyStemmer when installed
    return snowballstemmer.stemmer(STEMMER_NAMES[language])


@functools.lru_cache(maxsize=200_000)
def stem(word: str, language: str) -> str:
    """The word's stem without accents, so that "installé", "installer" and "installe" meet."""
    root = stemmer(language).stemWord(word)
    return "".join(c for c in unicodedata.normalize("NFD", root) if not unicodedata.combining(c))


def keyword_terms(text: str, language: str | None = None) -> list[str]:
    """The stems of a text's meaningful words, in order: what the keyword index stores and matches."""
    language = language or detect_language(text)
    stop_words = STOP_WORDS[language]
    return [stem(token, language) for token in words(text) if token not in stop_words]
