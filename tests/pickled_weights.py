"""A model folder's weights rewritten as pickled shards: what transformers 4 wrote with
``save_pretrained(safe_serialization=False, max_shard_size=...)`` and transformers 5 only reads."""
from __future__ import annotations

import json
from pathlib import Path

BIN_INDEX = "pytorch_model.bin.index.json"


def save_pickled_shards(folder: Path, n: int = 3, extra=None) -> Path:
    """``folder``'s model.safetensors replaced by ``n`` pickled shards and their index; ``extra``
    (any picklable object) goes into the second shard."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    keys, weight_map = sorted(state), {}
    for i in range(n):
        name = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
        part = {k: state[k].clone() for k in keys[i::n]}
        if extra is not None and i == 1:
            part["extra"] = extra
        torch.save(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / BIN_INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "model.safetensors").unlink()
    return folder
