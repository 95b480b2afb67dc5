"""Period chat: Old Bailey examinations as conversations, a chat template stock tools read,
answer-only fine-tuning from a pre-trained run, and the chat evaluation (07_finetuning/).

Modules: ``extract`` (TEI -> examinations), ``filters`` (one rule per reason), ``dataset``
(datasets on disk + card + statistics), ``template`` (role tokens, chat template, encoding),
``finetune`` (Trainer, collators, resume), ``evaluate`` (answer loss, modern-bait
anachronisms), ``respond`` (validated requests and replies, for serving), ``card``.
"""
from .card import chat_model_card
from .dataset import ChatDataError, ChatDatasetOptions, build_chat_dataset
from .evaluate import ChatEvalOptions, evaluate_chat
from .finetune import ChatTrainOptions, chat_settings, finetune_chat, fingerprints
from .respond import (ChatRequestError, ChatSettings, chat_reply, chat_stream, check_year, is_chat_model, read_chat_info,
                      validate_messages, with_era)
from .template import ChatFormatError, ChatIds, encode_chat

__all__ = [
    "build_chat_dataset", "chat_model_card", "chat_reply", "chat_stream", "ChatDataError",
    "ChatDatasetOptions", "ChatEvalOptions", "ChatFormatError", "ChatIds", "ChatRequestError",
    "ChatSettings", "chat_settings", "ChatTrainOptions", "check_year", "encode_chat", "evaluate_chat", "finetune_chat", "fingerprints",
    "is_chat_model", "read_chat_info", "validate_messages", "with_era",
]
