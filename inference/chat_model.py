"""The front door to a chat model: `load_chat_model` answers with the backend the settings choose.

One module per backend, each imported only when it answers: inference/onnx_model.py (ONNX Runtime GenAI on
a converted form, without torch) and inference/transformers_model.py (the fallback). Both make their prompts
with inference/tokenizer.py and decode with inference/decoding.py; neither imports this module.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from common.messages import notice
from inference.locate import ModelSource


def load_chat_model(settings: Settings, source: ModelSource):
    """`source` on the backend the settings choose: its converted form on ONNX Runtime GenAI, or
    transformers, which is also the fallback where the converted form cannot be had."""
    folder = fast_form(settings, source)
    if folder is not None:
        from inference.onnx_model import OnnxChatModel
        try:
            return OnnxChatModel(source, folder)
        except ApprentiError as error:
            notice(f"{error}: answering with transformers")
    from inference.transformers_model import ChatModel
    return ChatModel(source)


def fast_form(settings: Settings, source: ModelSource) -> Path | None:
    """The converted form the fast backend answers `source` with, made now if it is not made yet; None, with
    a one-line notice, where it cannot be (the runtime not installed, a model it cannot convert)."""
    if settings.backend == "transformers":
        return None
    if importlib.util.find_spec("onnxruntime_genai") is None:
        notice("onnxruntime-genai is not installed ('make run' installs it): answering with transformers")
        return None
    from inference.onnx_model import converted
    try:
        return converted(settings, source)
    except ApprentiError as error:
        notice(f"{error}: answering with transformers")
        return None
