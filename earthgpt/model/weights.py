"""Where the base components come from: a local folder, a hub id, or the bundled offline packages.

Every loader takes a ``source``:

- ``"bundled"``: the offline base (SmolLM2-135M-Instruct, DINOv2 ViT-S/14, EfficientNet-Lite0),
  converted once from its packages (see :mod:`earthgpt.model.bundled`) into
  ``<cache>/nano-base/{llm,vit,cnn}`` with a ``manifest.json``; the cache is ``$EARTHGPT_CACHE`` or
  ``~/.cache/earthgpt``. The conversion runs lazily on first use or with ``earthgpt weights prepare``.
- a local folder in Hugging Face layout (``config.json`` + safetensors): what ``--model DIR`` takes;
- a hub id (``facebook/dinov2-large``): only when the user has a hub; offline it fails at once
  with a message instead of retrying.

A component's identity is its name plus a sha256 over its weight files; delta checkpoints record
the identity of the base they were trained on and check it with :func:`verify_identity`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

BUNDLED = "bundled"
BASE_NAME = "nano-base"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
COMPONENTS = ("llm", "vit", "cnn")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf")
QUANTIZATIONS = ("4bit", "8bit")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TMP_PREFIX = f".{BASE_NAME}-tmp-"


def cache_dir() -> Path:
    """The cache folder: ``$EARTHGPT_CACHE``, else ``~/.cache/earthgpt``."""
    env = os.environ.get("EARTHGPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "earthgpt"


# --- the bundled base ----------------------------------------------------------------------------


def prepare_nano_base(cache: Path | None = None, *, force: bool = False, progress: bool = True) -> Path:
    """Convert the bundled packages once into ``<cache>/nano-base`` and return that folder.

    Returns at once when the folder (with a current manifest) exists, unless ``force``. The folder
    is built under a temporary name next to it and renamed when complete, so an interrupted run
    never leaves a half-made base.
    """
    from earthgpt.model import bundled

    root = (cache or cache_dir()).expanduser()
    final = root / BASE_NAME
    if not force and _manifest_format(final) == MANIFEST_FORMAT:
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    bundled.check_requirements()
    steps: list[tuple[str, Callable[[Path], dict]]] = [
        ("llm", bundled.convert_llm), ("vit", bundled.convert_vit), ("cnn", bundled.convert_cnn),
    ]
    bar = tqdm(steps, desc="preparing nano-base", unit="component", disable=not progress)
    build = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        started = time.perf_counter()
        components = {}
        with _transformers_progress(progress):
            for role, convert in bar:
                bar.set_postfix_str(role)
                log.info("converting %s", role)
                components[role] = convert(build / role)
        manifest = _manifest(build, components, time.perf_counter() - started)
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        build.chmod(0o755)  # mkdtemp makes it private; the finished cache is an ordinary folder
        _publish(build, final, replace=force or _manifest_format(final) != MANIFEST_FORMAT)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("nano-base ready at %s (base_id %s)", final, read_manifest(root)["base_id"])
    return final


def read_manifest(cache: Path | None = None) -> dict:
    """The manifest of the prepared bundled base; raises ``FileNotFoundError`` when not prepared."""
    path = (cache or cache_dir()).expanduser() / BASE_NAME / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no prepared base at {path.parent}; run `earthgpt weights prepare`")
    return json.loads(path.read_text())


def bundled_component(role: str, cache: Path | None = None) -> Path:
    """Folder of one bundled component (``llm``, ``vit`` or ``cnn``), preparing the base if needed."""
    if role not in COMPONENTS:
        raise ValueError(f"unknown bundled component {role!r}; known: {', '.join(COMPONENTS)}")
    return prepare_nano_base(cache) / role


def _manifest(build: Path, components: dict[str, dict], seconds: float) -> dict:
    import transformers

    identities = {role: component_identity(build / role, info["name"]) for role, info in components.items()}
    for role, info in components.items():
        info.update(identities[role], path=role)
        info["size_bytes"] = sum(f.stat().st_size for f in (build / role).iterdir())
    return {"format": MANIFEST_FORMAT, "base_id": base_identity(identities, prefix=BASE_NAME)["base_id"],
            "components": components,
            "created_with": {"torch": torch.__version__, "transformers": transformers.__version__},
            "prepare_seconds": round(seconds, 1)}


def _manifest_format(folder: Path) -> int | None:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("format")
    except (OSError, ValueError):
        return None


def _publish(build: Path, final: Path, *, replace: bool) -> None:
    """Rename the finished ``build`` to ``final``.

    An existing ``final`` is moved aside and deleted when ``replace``; otherwise it is kept (another
    process finished the same conversion first) and ``build`` is left for the caller to delete.
    """
    if final.exists() and not replace:
        return
    old = None
    if final.exists():
        old = final.with_name(f"{_TMP_PREFIX}{os.getpid()}-old")
        final.rename(old)
    try:
        build.rename(final)
    except OSError:
        if _manifest_format(final) != MANIFEST_FORMAT:  # not a concurrent, complete build: a real error
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_builds(root: Path) -> None:
    """Delete leftovers of builds whose process is gone (killed runs)."""
    for path in root.glob(f"{_TMP_PREFIX}*"):
        pid = path.name[len(_TMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            log.info("removing leftover of an interrupted build: %s", path)
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Turn transformers' own progress bars off for the duration when ``enabled`` is false."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# --- resolving a source --------------------------------------------------------------------------


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


# --- loaders -------------------------------------------------------------------------------------


def load_llm(
    source: str,
    *,
    dtype: torch.dtype = torch.float32,
    quantization: str | None = None,
    keep_unquantized: Sequence[str] = (),
):
    """Causal LM and its tokenizer from ``source`` (``"bundled"``, a folder or a hub id).

    ``quantization`` is ``None``, ``"4bit"`` (NF4) or ``"8bit"`` (LLM.int8) through bitsandbytes;
    both run on CPU (slowly) and on CUDA. ``keep_unquantized`` names modules (matched as parts of
    the module path, e.g. ``q_proj``) that stay in ``dtype``; the LM head always does.
    Returns ``(model, tokenizer)``, the model in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve_source(source, "llm")
    kwargs: dict = {"dtype": dtype}
    if quantization is not None:
        kwargs["quantization_config"] = _bnb_config(quantization, dtype, keep_unquantized)
        kwargs["device_map"] = {"": "cuda:0" if torch.cuda.is_available() else "cpu"}
    with _transformers_progress(False):  # a local load takes ~1 s: no per-tensor bars
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(location)
    if not tokenizer.chat_template:
        log.warning("the tokenizer from %s has no chat template; conversations need one", source)
    return model, tokenizer


def _bnb_config(quantization: str, dtype: torch.dtype, keep_unquantized: Sequence[str] = ()):
    from transformers import BitsAndBytesConfig
    from transformers.utils import is_bitsandbytes_available

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS} or None, got {quantization!r}")
    if not is_bitsandbytes_available():
        raise ImportError(f"{quantization} loading needs bitsandbytes: pip install bitsandbytes")
    skip = ["lm_head", *keep_unquantized] if keep_unquantized else None  # None: transformers' default
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=skip,
    )


def load_vit(source: str, *, dtype: torch.dtype = torch.float32):
    """A ``transformers.Dinov2Model`` from ``source`` (``"bundled"``, a folder or a hub id), eval mode."""
    from transformers import Dinov2Model

    location = resolve_source(source, "vit")
    with _transformers_progress(False):  # a local load takes ~1 s: no per-tensor bars
        return Dinov2Model.from_pretrained(location, dtype=dtype).eval()


def _load_efficientnet_lite0(source: str) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    from safetensors.torch import load_file

    folder = Path(resolve_source(source, "cnn"))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"efficientnet-lite0 folder {folder} has no model.safetensors")
    config_path = folder / "config.json"
    declared = json.loads(config_path.read_text()).get("architecture") if config_path.is_file() else None
    if declared not in (None, "efficientnet-lite0"):
        raise ValueError(f"{config_path} declares architecture {declared!r}; expected 'efficientnet-lite0'")
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval()


def _load_convnext(source: str) -> torch.nn.Module:
    from transformers import ConvNextModel

    location = resolve_source(source, "cnn")
    with _transformers_progress(False):  # a local load takes ~1 s: no per-tensor bars
        return ConvNextModel.from_pretrained(location).eval()


CNN_LOADERS: dict[str, Callable[[str], torch.nn.Module]] = {
    "efficientnet-lite0": _load_efficientnet_lite0,
    "convnext": _load_convnext,
}


def load_cnn(arch: str, source: str) -> torch.nn.Module:
    """The CNN backbone ``arch`` (see ``CNN_LOADERS``) from ``source``, float32, eval mode."""
    if arch not in CNN_LOADERS:
        raise ValueError(f"unknown CNN arch {arch!r}; known: {', '.join(CNN_LOADERS)}")
    return CNN_LOADERS[arch](source)


# --- identity ------------------------------------------------------------------------------------


def component_identity(path: Path, name: str | None = None) -> dict:
    """``{"name", "sha256", "files"}``: a sha256 per weight file and one over all of them.

    Only weight files count (config and tokenizer files change with library versions while the
    weights stay the same). ``name`` defaults to the folder name.
    """
    path = Path(path)
    files = sorted(f for f in path.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) in {path}")
    sums = {f.name: _sha256(f) for f in files}
    overall = hashlib.sha256("".join(f"{n}:{s}\n" for n, s in sums.items()).encode()).hexdigest()
    return {"name": name or path.name, "sha256": overall, "files": sums}


def base_identity(components: Mapping[str, Path | dict], prefix: str = "base") -> dict:
    """Identity of a whole base: each component's (from a folder, or one already computed) and a ``base_id``.

    ``base_id`` is ``prefix`` plus the first 12 hex digits of a hash over the components' hashes.
    """
    parts = {
        role: dict(value) if isinstance(value, Mapping) else component_identity(Path(value))
        for role, value in sorted(components.items())
    }
    digest = hashlib.sha256("".join(f"{r}:{p['sha256']}\n" for r, p in parts.items()).encode()).hexdigest()
    return {"base_id": f"{prefix}-{digest[:12]}", "components": parts}


def source_identity(role: str, source: str) -> dict:
    """Identity of the component a loader would load from ``source`` (weights hashed afresh)."""
    folder = Path(resolve_source(source, role))
    name = read_manifest()["components"][role]["name"] if source == BUNDLED else source
    return component_identity(folder, name)


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


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
