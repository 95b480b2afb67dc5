"""A second process stepping in at an exact point of a corpus reader: the deterministic form of
the races the hostile rounds 21-23 reproduced with real processes first."""
from __future__ import annotations

from londonlm.corpus import manifest as manifest_module


def read_at(monkeypatch, n: int, then) -> None:
    """``then()`` runs as the reader reads its ``n``-th text: another process, just now."""
    real, calls = manifest_module.document_text, []

    def document_text(processed_dir, row):
        calls.append(row["id"])
        if len(calls) == n:
            then()
        return real(processed_dir, row)

    monkeypatch.setattr(manifest_module, "document_text", document_text)
