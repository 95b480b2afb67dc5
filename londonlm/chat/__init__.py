"""Period chat: Old Bailey examinations as conversations, a chat template stock tools read,
answer-only fine-tuning from a pre-trained run, and the chat evaluation (07_finetuning/).

Modules: ``extract`` (TEI -> examinations), ``filters`` (one rule per reason), ``dataset``
(datasets on disk + card + statistics), ``template`` (role tokens, chat template, encoding),
``finetune`` (Trainer, collators, resume), ``evaluate`` (answer loss, modern-bait
anachronisms), ``respond`` (validated requests and replies, for serving), ``card``.
"""
