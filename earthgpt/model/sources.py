"""Where a base component or a checkpoint comes from: the bundled base, a local folder, or a hub id.

Every loader (:mod:`earthgpt.model.loaders`) takes a ``source``:

- ``"bundled"``: the offline base (SmolLM2-135M-Instruct, DINOv2 ViT-S/14, EfficientNet-Lite0),
  prepared once in the cache folder (:mod:`earthgpt.model.base_cache`);
- a local folder in Hugging Face layout (``config.json`` + safetensors): what ``--model DIR`` takes;
- a hub id (``facebook/dinov2-large``): only when the user has a hub; offline it fails at once
  with a message instead of retrying.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from earthgpt.identity import weight_folder_identity
from earthgpt.model.base_cache import bundled_component, read_manifest

log = logging.getLogger(__name__)

BUNDLED = "bundled"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def resolve_source(source: str, role: str) -> str:
    """A loadable location for ``source``: the bundled folder, a local folder, or the hub id itself.

    Raises ``FileNotFoundError`` for a path that does not exist and ``ConnectionError`` for a hub id
    that is neither in the local hub cache nor reachable.
    """
    if source == BUNDLED:
        return str(bundled_component(role))
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or not _HUB_ID.match(source) or source.startswith((".", "~", "/")):
        raise FileNotFoundError(
            f"{role} source {source!r} is not a folder; expected {BUNDLED!r}, a folder with config.json "
            "and safetensors weights, or a hub id like 'owner/name'"
        )
    return _hub_snapshot(source, role)


def _hub_snapshot(repo_id: str, role: str) -> str:
    """Local snapshot folder of a hub model: from the hub cache, or downloaded when reachable."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception as error:  # any miss in the local cache means: try the hub
        cached_error = error
    if constants.HF_HUB_OFFLINE or not _hub_reachable(constants.ENDPOINT):
        state = "disabled (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else "not reachable"
        raise ConnectionError(
            f"{role} source {repo_id!r} is not a local folder, not in the local hub cache, and the hub "
            f"({constants.ENDPOINT}) is {state}; pass a local folder or {BUNDLED!r} instead"
        ) from cached_error
    log.info("downloading %s %s from %s", role, repo_id, constants.ENDPOINT)
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]  # never pickled weights
    return snapshot_download(repo_id, allow_patterns=patterns)


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails at once instead of retrying for half a minute."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy decides; let the hub client try
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def source_identity(role: str, source: str) -> dict:
    """Identity of the component a loader would load from ``source`` (weights hashed afresh)."""
    folder = Path(resolve_source(source, role))
    name = read_manifest()["components"][role]["name"] if source == BUNDLED else source
    return weight_folder_identity(folder, name)
