"""Content hashes and identities: the one place that decides how a file, a module or a base is hashed.

- :func:`file_sha256`: a file's bytes; :func:`file_stamp`: a file's resolved path, size and
  modification time (what caches key rewritten images on, without reading them).
- :func:`tensors_digest` feeds named tensors (sorted by name, a header line and the raw bytes of
  each) into a sha256. :func:`module_state_identity` hashes a module's state dict (a random base's
  identity); :func:`module_fingerprint` hashes every tensor a module computes with (parameters and
  all buffers) plus a description of what else an output depends on (the feature-cache keys).
- A component's identity (:func:`weight_folder_identity`) is its name plus a sha256 over its weight
  files; a base's identity (:func:`combine_base_identity`) combines its components' into a
  ``base_id``. Delta checkpoints record the base they were trained on and check it with
  :func:`verify_identity`.

The layouts here are recorded in checkpoints and cache keys: changing one orphans every cache entry
and makes every saved delta checkpoint refuse its base.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf")
# Header line of each tensor: the feature caches put the shape first; a random base's identity was
# first recorded with the dtype first, and saved checkpoints still carry it.
SHAPE_FIRST = "{name}:{shape}:{dtype}"
DTYPE_FIRST = "{name}:{dtype}:{shape}"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks of ``chunk`` bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: Path) -> str:
    """``<resolved path>|<size>|<mtime in ns>``: changes when the file is rewritten or moved."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"


def tensors_digest(tensors: Mapping[str, torch.Tensor], header: str = SHAPE_FIRST) -> Any:
    """A sha256 (``hashlib`` object, to be updated further or read) over ``tensors`` sorted by name:
    for each, the ``header`` line (``SHAPE_FIRST`` or ``DTYPE_FIRST``) and its raw bytes."""
    digest = hashlib.sha256()
    import torch  # here, not at the top: hashing files (the app's image store) needs no torch

    for name, tensor in sorted(tensors.items()):
        line = header.format(name=name, shape=tuple(tensor.shape), dtype=tensor.dtype)
        digest.update(f"{line}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest


def module_state_identity(module: nn.Module, name: str) -> dict:
    """``{"name", "sha256"}`` over a module's state dict (names, dtypes, shapes and bytes)."""
    return {"name": name, "sha256": tensors_digest(module.state_dict(), DTYPE_FIRST).hexdigest()}


def module_fingerprint(module: nn.Module, described: Mapping[str, Any]) -> str:
    """Hex sha256 over every tensor ``module`` computes with and ``described`` (as sorted JSON).

    Non-persistent buffers count too (a CNN's input re-normalisation lives there), so a change of
    preprocessing code changes the fingerprint; ``described`` names what else the output depends on.
    """
    tensors = {**dict(module.named_buffers()), **dict(module.named_parameters())}
    digest = tensors_digest(tensors, SHAPE_FIRST)
    digest.update(json.dumps(dict(described), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def weight_folder_identity(path: Path, name: str | None = None) -> dict:
    """``{"name", "sha256", "files"}``: a sha256 per weight file of a folder and one over all of them.

    Only weight files count (config and tokenizer files change with library versions while the
    weights stay the same). ``name`` defaults to the folder name.
    """
    path = Path(path)
    files = sorted(f for f in path.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {path}")
    sums = {f.name: file_sha256(f) for f in files}
    overall = hashlib.sha256("".join(f"{n}:{s}\n" for n, s in sums.items()).encode()).hexdigest()
    return {"name": name or path.name, "sha256": overall, "files": sums}


def combine_base_identity(components: Mapping[str, Path | Mapping], prefix: str = "base") -> dict:
    """Identity of a whole base: each component's (a weight folder, or an identity already computed)
    and a ``base_id``, ``prefix`` plus the first 12 hex digits of a hash over the components' hashes."""
    parts = {
        role: dict(value) if isinstance(value, Mapping) else weight_folder_identity(Path(value))
        for role, value in sorted(components.items())
    }
    digest = hashlib.sha256("".join(f"{r}:{p['sha256']}\n" for r, p in parts.items()).encode()).hexdigest()
    return {"base_id": f"{prefix}-{digest[:12]}", "components": parts}


def verify_identity(expected: Mapping, actual: Mapping) -> None:
    """Raise ``ValueError`` naming both sides when two identities (component or base) differ."""
    if "components" in expected or "components" in actual:
        want, got = expected.get("components", {}), actual.get("components", {})
        differ = [r for r in sorted(set(want) | set(got)) if _short(want.get(r)) != _short(got.get(r))]
        if differ:
            detail = "; ".join(f"{r}: expected {_describe(want.get(r))}, got {_describe(got.get(r))}"
                               for r in differ)
            raise ValueError(f"base mismatch: expected {expected.get('base_id', '?')}, "
                             f"got {actual.get('base_id', '?')} ({detail})")
        return
    if expected.get("sha256") != actual.get("sha256"):
        raise ValueError(f"component mismatch: expected {_describe(expected)}, got {_describe(actual)}")


def _short(identity: Mapping | None) -> str | None:
    return identity.get("sha256") if identity else None


def _describe(identity: Mapping | None) -> str:
    if not identity:
        return "nothing"
    return f"{identity.get('name', '?')!r} (sha256 {str(identity.get('sha256'))[:12]}…)"
