"""What the pages share: Streamlit renders labels, warnings and captions as Markdown, so a text from a user's
files must be escaped to show as typed (and never turn into a link or an image the browser would fetch)."""
import re


def plain(text: str) -> str:
    """`text` with every Markdown character escaped."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$:])", r"\\\1", text)
