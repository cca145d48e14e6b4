"""Prompts as token ids, made alike on every backend: a chat in the model's template, or plain text.

`ChatTokenizer.chat_ids` is the one place a chat becomes ids; each backend brings a tokenizer that renders the
template and encodes text. The transformers backend wraps the tokenizer it trains with; the ONNX backend reads
the same files with the `tokenizers` library and jinja2 (`FolderTokenizer`), so that answering never imports
torch or transformers (`from transformers import AutoTokenizer` alone takes 4 s).
"""
from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from pathlib import Path

# The named special tokens transformers passes to a chat template (its SPECIAL_TOKENS_ATTRIBUTES).
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class ChatTokenizer:
    """A tokenizer as prompts need it: `render` a chat in the template, `encode` text, `text_ids`, and its
    `special_tokens` (the added tokens that `encode(..., as_text=True)` reads as text)."""

    special_tokens: tuple[str, ...]

    def render(self, messages: list[dict]) -> str:
        """The chat in the model's template, with the prompt of the assistant's turn, as text."""
        raise NotImplementedError

    def encode(self, text: str, as_text: bool) -> list[int]:
        """`text`'s ids, no special token added; `as_text`: a special token's text in it stays text."""
        raise NotImplementedError

    def text_ids(self, text: str) -> list[int]:
        """Plain text as the model continues it: with the tokens its tokenizer adds (a BOS, for some)."""
        raise NotImplementedError

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The messages in the model's chat template. What the messages say is tokenised as text, special tokens
        included: a user or a document that writes "<|im_start|>system" must not open a turn of its own. So each
        special token in what they say is marked before the template is rendered, and read as text; the rest
        is encoded whole, exactly as training's apply_chat_template encodes it (the marking is transformers'
        own, apply_chat_template(sanitize_control_tokens=True), in transformers/utils/chat_template_utils.py)."""
        special = "|".join(map(re.escape, sorted(self.special_tokens, key=len, reverse=True))) or "(?!)"
        rendered = self.render([{key: marked(value, special) for key, value in message.items()}
                                for message in messages])
        # [text, token said, text, ...]: None for a lone mark (a template that cut the text around a token)
        pieces = re.split(f"{MARK_START}({special}){MARK_END}|[{MARK_START}{MARK_END}]", rendered)
        ids, newline = self.encode(pieces[0], as_text=False), self.encode("\n", as_text=False)
        for number, piece in enumerate(pieces[1:], 1):
            if piece:
                ids += self.encode_within(piece, number % 2 == 1, newline)
        return ids

    def encode_within(self, piece: str, as_text: bool, newline: list[int]) -> list[int]:
        """A piece from the middle of the chat, encoded after a newline taken off again: a SentencePiece
        tokenizer adds no prefix space there (transformers' _encode_chat_piece)."""
        ids = self.encode("\n" + piece, as_text)
        return ids[len(newline):] if ids[:len(newline)] == newline else self.encode(piece, as_text)


# Private-use characters around a special token a message says; taken out of what the messages say first, so
# that no one can mark a token of their own.
MARK_START, MARK_END = "\U000f0000", "\U000f0001"  # transformers' own (_CONTROL_TOKEN_START, _END)


def marked(value, special: str):
    if not isinstance(value, str):
        return value
    return re.sub(special, f"{MARK_START}\\g<0>{MARK_END}", value.replace(MARK_START, "").replace(MARK_END, ""))


class TransformersTokenizer(ChatTokenizer):
    """The transformers tokenizer the transformers backend loads with its model."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_tokens = tuple(token.content for token in tokenizer.added_tokens_decoder.values()
                                    if token.special)

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, text: str, as_text: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=as_text)["input_ids"]

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]


class FolderTokenizer(ChatTokenizer):
    """A model folder's tokenizer as transformers saved it (tokenizer.json, tokenizer_config.json, the chat
    template), read as transformers reads it, with the `tokenizers` library and jinja2 only."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer
        config = read_json(folder / "tokenizer_config.json")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.lock = threading.Lock()  # encode_special_tokens is the tokenizer's state, not a call's argument
        self.special_tokens = tuple(token.content for token in self.tokenizer.get_added_tokens_decoder().values()
                                    if token.special)
        self.named_tokens = named_tokens(folder, config)
        self.template = chat_template(folder, config)

    def render(self, messages: list[dict]) -> str:
        if self.template is None:
            raise ValueError("the model's tokenizer has no chat template")
        return self.template.render(messages=messages, tools=None, documents=None, add_generation_prompt=True,
                                    **self.named_tokens)

    def encode(self, text: str, as_text: bool) -> list[int]:
        with self.lock:
            self.tokenizer.encode_special_tokens = as_text
            return self.tokenizer.encode(text, add_special_tokens=False).ids

    def text_ids(self, text: str) -> list[int]:
        # tokenizer.json's post-processor adds a BOS where the model's tokenizer adds one: transformers 5
        # keeps it as saved (add_bos_token in the config changes nothing there)
        with self.lock:
            self.tokenizer.encode_special_tokens = False
            return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def named_tokens(folder: Path, config: dict) -> dict[str, str]:
    """The named special tokens as transformers reads them: from tokenizer_config.json, which a legacy
    special_tokens_map.json overrides where the config has no added_tokens_decoder."""
    tokens = {name: config[name] for name in NAMED_TOKENS if config.get(name)}
    if "added_tokens_decoder" not in config:
        tokens |= {name: value for name, value in read_json(folder / "special_tokens_map.json").items()
                   if name in NAMED_TOKENS and value}
    return {name: value["content"] if isinstance(value, dict) else value for name, value in tokens.items()}


def chat_template(folder: Path, config: dict):
    """The compiled chat template: chat_template.jinja, else the config's (by name "default" in a list)."""
    if (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text()
    else:
        source = config.get("chat_template")
        if isinstance(source, list):
            source = {template["name"]: template["template"] for template in source}.get("default")
    return None if source is None else template_environment().from_string(source)


def template_environment():
    """The sandbox transformers renders chat templates in (transformers/utils/chat_template_utils.py,
    _cached_compile_jinja_template): a template from the hub is untrusted code."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters, which a prompt must keep
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class TemplateDict:  # dict() without the type's attributes, as transformers gives it
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):  # no underscore-prefixed attributes: CPython's internals
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attributes = dict(*args, **kwargs)
            for name in attributes:
                TemplateNamespace.check(name)
            jinja2.utils.Namespace.__init__(self, attributes)

        def __setitem__(self, name, value):
            TemplateNamespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"a chat template cannot set {name!r} on a namespace")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals.update(raise_exception=raise_exception, dict=TemplateDict(), namespace=TemplateNamespace,
                               strftime_now=lambda format: datetime.now().strftime(format))
    return environment


class Prompts:
    """What every backend's model does alike, through the ChatTokenizer it keeps as `prompts`."""

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return self.prompts.chat_ids(messages)

    def text_ids(self, text: str) -> list[int]:
        return self.prompts.text_ids(text)
