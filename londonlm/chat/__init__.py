"""Period chat: Old Bailey examinations as conversations, a chat template stock tools read,
answer-only fine-tuning from a pre-trained run, and the chat evaluation (07_finetuning/).

Modules: ``extract`` (TEI -> examinations), ``filters`` (one rule per reason), ``dataset``
(datasets on disk + card + statistics), ``template`` (role tokens, chat template, encoding),
``finetune`` (Trainer, collators, resume), ``evaluate`` (answer loss, modern-bait
anachronisms), ``respond`` (validated requests and replies, for serving), ``card``.
"""
from ..core import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "card": ("chat_model_card",),
    "dataset": ("ChatDataError", "ChatDatasetOptions", "build_chat_dataset"),
    "evaluate": ("ChatEvalOptions", "evaluate_chat"),
    "finetune": ("ChatTrainError", "chat_time_lock", "dataset_fingerprint", "finetune_chat", "fingerprints"),
    "preset": ("ChatTrainOptions", "chat_settings"),
    "respond": ("ChatModelDamaged", "ChatRequestError", "ChatSettings", "chat_cutoff", "chat_reply", "chat_stream",
                "check_year",
                "is_chat_model", "read_chat_info", "validate_messages", "with_era"),
    "template": ("ChatFormatError", "ChatIds", "encode_chat"),
})
