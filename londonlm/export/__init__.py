"""Exports of trained models to formats other tools run: GGUF for llama.cpp (:mod:`.gguf`),
with a llama.cpp round-trip check (:mod:`.gguf_check`)."""
from .gguf import GGUFOptions, default_output, export_gguf

__all__ = [
    "default_output", "export_gguf", "GGUFOptions",
]
