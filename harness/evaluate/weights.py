"""The weights of a saved model folder: which files may be loaded, and the hash that names them.

Only safetensors weights are loaded (`safetensors_weights`); a folder holding a pickle-based
weights file is refused, since unpickling runs what the file says. `model_sha256` hashes the
safetensors files: the response cache is keyed by it, and the eval JSON records it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.errors import UserError
from harness.results import hash_file

# Weight files that torch unpickles: never loaded from a model folder (safetensors_weights).
PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def model_sha256(model_dir: Path) -> str:
    """A hash of the checkpoint's weight files (`safetensors_weights`): what the response cache
    is keyed by."""
    digest = hashlib.sha256()
    for path in safetensors_weights(model_dir):
        digest.update(path.name.encode())
        hash_file(path, digest)
    return digest.hexdigest()


def safetensors_weights(model_dir: Path) -> list[Path]:
    """The `*.safetensors` weight files of a model folder, sorted: the only weights the harness
    loads (it saves nothing else). Checked before anything reads the folder; a weights file in a
    pickle-based format there (`PICKLED_WEIGHTS`: pytorch_model.bin, *.pt, ...) is a UserError
    naming it, with safetensors beside it or not, since unpickling runs what the file says."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError("no such model folder", where=str(model_dir))
    for path in sorted(model_dir.iterdir()):
        if path.suffix.lower() in PICKLED_WEIGHTS:
            raise UserError(f"a weights file in a pickle-based format ({path.suffix}): only safetensors weights "
                            "(*.safetensors, as the harness saves them) are loaded, never a pickle; remove the "
                            "file or convert it to safetensors", where=str(path))
    if not (weights := sorted(model_dir.glob("*.safetensors"))):
        raise UserError("no model weights: expected *.safetensors files (only safetensors is loaded)",
                        where=str(model_dir))
    return weights
