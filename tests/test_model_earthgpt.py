"""EarthGPT on the tiny random preset: splicing, the answer-only loss, the cache path, presets' wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from earthgpt.config import ProjectorConfig, get_preset, shrink_for_test
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.projector import (
    ContextProjector,
    GlobalContext,
    GridPosition2D,
    GroupLayerNorm,
    add_global_context,
    add_grid_position,
    build_projector,
)


def tiny_model(seed: int = 0) -> EarthGPT:
    return EarthGPT.from_config(get_preset("tiny"), pretrained=False, seed=seed)


def prompt(model: EarthGPT, batch: int = 1, text: tuple[int, ...] = (5, 6, 7)) -> torch.Tensor:
    n = model.config.num_visual_tokens
    row = [1, 2, *[model.image_token_id] * n, *text]
    return torch.tensor([row] * batch)


def test_projector_registry() -> None:
    assert build_projector(ProjectorConfig("mlp2x_gelu"), 10, 4)(torch.randn(2, 10)).shape == (2, 4)
    assert isinstance(build_projector(ProjectorConfig("linear"), 10, 4), torch.nn.Linear)
    with pytest.raises(ValueError, match="unknown projector type 'qformer'; known: mlp2x_gelu, linear"):
        build_projector(ProjectorConfig("qformer"), 10, 4)


def test_group_layernorm_normalises_each_source_on_its_own() -> None:
    norm = GroupLayerNorm([3, 5])
    x = torch.randn(4, 8)
    scaled = x.clone()
    scaled[:, :3] = scaled[:, :3] * 1000 + 26  # one source on a very different scale and offset
    out = norm(scaled)
    torch.testing.assert_close(out, norm(x), atol=1e-4, rtol=1e-4)
    for part in torch.split(out, [3, 5], dim=-1):
        torch.testing.assert_close(part.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    projector = build_projector(ProjectorConfig(input_norm="group_layernorm"), 8, 4, [3, 5])
    assert isinstance(projector[0], GroupLayerNorm) and projector(x).shape == (4, 4)


def test_projector_input_norm_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown projector input_norm 'batchnorm'"):
        build_projector(ProjectorConfig(input_norm="batchnorm"), 8, 4)
    with pytest.raises(ValueError, match="group_layernorm needs channel groups summing to 8, got"):
        build_projector(ProjectorConfig(input_norm="group_layernorm"), 8, 4, [3, 4])
    with pytest.raises(ValueError, match="group_layernorm needs channel groups"):
        build_projector(ProjectorConfig(input_norm="group_layernorm"), 8, 4)


def test_grid_position_starts_at_zero_and_keeps_the_projectors_names() -> None:
    """The 2-D position signal comes last in the projector; at initialisation it adds nothing, and
    the projector's own parameters keep their names, so a projector trained without it loads."""
    cfg = ProjectorConfig(input_norm="group_layernorm", position="fourier2d")
    with_pos = build_projector(cfg, 8, 4, [3, 5])
    without = build_projector(ProjectorConfig(input_norm="group_layernorm"), 8, 4, [3, 5])
    assert isinstance(with_pos[-1], GridPosition2D)
    names = {n for n, _ in with_pos.named_parameters()}
    assert names - {n for n, _ in without.named_parameters()} == {"2.linear.weight", "2.linear.bias"}
    without.load_state_dict({k: v for k, v in with_pos.state_dict().items() if not k.startswith("2.")})
    x = torch.randn(2, 16, 8)
    assert torch.equal(with_pos(x), without(x))
    appended = add_grid_position(without, 4)
    assert appended is without and isinstance(appended[-1], GridPosition2D)
    wrapped = add_grid_position(torch.nn.Linear(8, 4), 4)  # a bare Linear is wrapped, not mutated
    assert isinstance(wrapped, torch.nn.Sequential) and wrapped(torch.randn(1, 4, 8)).shape == (1, 4, 4)


def test_global_context_starts_at_zero_keeps_the_names_and_adds_the_images_normed_mean() -> None:
    """The global context adds nothing at initialisation and leaves the projector's own parameter
    names as they were (with and without the input norm and the position signal), so a projector
    trained without it loads. Trained, it adds one vector per image to each of its tokens: the
    linear map of the mean of the tokens as the input norm leaves them."""
    for cfg in (ProjectorConfig(), ProjectorConfig(input_norm="group_layernorm", position="fourier2d")):
        without = build_projector(cfg, 8, 4, [3, 5])
        with_context = build_projector(ProjectorConfig(**{**vars(cfg), "context": "mean"}), 8, 4, [3, 5])
        assert isinstance(with_context, ContextProjector) and isinstance(with_context[-1], GlobalContext)
        last = len(with_context) - 1
        names = {n for n, _ in with_context.named_parameters()} - {n for n, _ in without.named_parameters()}
        assert names == {f"{last}.linear.weight", f"{last}.linear.bias"}
        own = {k: v for k, v in with_context.state_dict().items() if not k.startswith(f"{last}.")}
        without.load_state_dict(own)
        x = torch.randn(2, 16, 8)
        assert torch.equal(with_context(x), without(x))
    torch.nn.init.normal_(with_context[-1].linear.weight)
    added = with_context(x) - without(x)
    normed_mean = with_context[0](x).mean(dim=1)  # the group LayerNorm's output, averaged over tokens
    expected = with_context[-1].linear(normed_mean)
    for image in range(2):
        assert torch.allclose(added[image], expected[image].expand(16, 4), atol=1e-5)
    assert not torch.allclose(added[0, 0], added[1, 0])
    appended = add_global_context(torch.nn.Linear(8, 4), 8, 4)  # a bare Linear is wrapped
    assert isinstance(appended, ContextProjector) and appended(torch.randn(1, 4, 8)).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="unknown projector context"):
        build_projector(ProjectorConfig(context="max"), 8, 4)


def test_grid_position_reads_cell_centres_row_major_on_any_grid() -> None:
    """Token k of an s × s grid lies at column k mod s and row k div s (the vision branch flattens
    (rows, columns) row-major); its (x, y) features are that cell's centre in [0, 1]. The same
    module serves 2 × 2 and 4 × 4 grids, and the signal differs from cell to cell."""
    pos = GridPosition2D(6)
    xy = pos.features(2, torch.device("cpu"), torch.float32)[:, :2]
    assert xy.tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    assert pos.features(4, torch.device("cpu"), torch.float32)[5, :2].tolist() == [0.375, 0.375]
    torch.nn.init.normal_(pos.linear.weight)
    for side in (2, 4):
        added = pos(torch.zeros(3, side * side, 6))
        assert added.shape == (3, side * side, 6)
        assert torch.equal(added[0], added[2])  # the same for every image
        assert len({tuple(row.tolist()) for row in added[0]}) == side * side  # a distinct signal per cell
    with pytest.raises(ValueError, match="square number of tokens"):
        pos(torch.zeros(1, 5, 6))
    with pytest.raises(ValueError, match="unknown projector position"):
        build_projector(ProjectorConfig(position="learned"), 8, 4)


def test_image_token_lies_past_the_vocabulary_and_embeddings_stay_unresized() -> None:
    model = tiny_model()
    assert model.image_token_id == 49152
    assert model.llm.get_input_embeddings().num_embeddings == 49152


def test_encode_images_gives_one_llm_vector_per_grid_cell() -> None:
    model = tiny_model()
    assert model.encode_images(torch.randn(2, 3, 56, 56)).shape == (2, 16, 32)


def test_embed_writes_features_over_placeholders_in_order() -> None:
    model = tiny_model()
    ids = prompt(model, batch=2)
    features = torch.randn(2, 16, 32)
    embeds = model.embed(ids, features)
    table = model.llm.get_input_embeddings().weight
    assert torch.equal(embeds[:, 2:18], features)
    assert torch.equal(embeds[0, :2], table[[1, 2]])
    assert torch.equal(embeds[1, 18:], table[[5, 6, 7]])


def test_embed_count_mismatch_message() -> None:
    model = tiny_model()
    message = "Image features and image tokens do not match: tokens: 32, features: 16"
    with pytest.raises(ValueError, match=message):
        model.embed(prompt(model, batch=2), torch.randn(1, 16, 32))
    with pytest.raises(ValueError, match="tokens: 16, features: 0"):
        model.embed(prompt(model), None)


def test_embed_rejects_ids_outside_the_vocabulary() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"token ids must lie in 0..49151"):
        model.embed(torch.tensor([[3, 60000]]))


def test_loss_covers_labelled_tokens_only() -> None:
    model = tiny_model()
    ids = prompt(model, text=(5, 6, 7, 8))
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]  # only the last two tokens are the answer
    pixels = torch.randn(1, 3, 56, 56)
    out = model(ids, pixel_values=pixels, labels=labels)
    logits = out.logits[0]
    manual = F.cross_entropy(logits[-3:-1], ids[0, -2:])  # logits at t predict token t + 1
    assert torch.allclose(out.loss, manual, atol=1e-6)
    features = model.encode_images(pixels)
    assert torch.allclose(model(ids, image_features=features).logits, out.logits)
    with pytest.raises(ValueError, match="not both"):
        model(ids, pixel_values=pixels, image_features=features)


@pytest.mark.parametrize("stage", [1, 2])
def test_answer_only_logits_give_the_same_loss_and_gradients(stage: int) -> None:
    from earthgpt.model.tuning import apply_stage

    model = tiny_model()
    apply_stage(model, stage)
    ids = prompt(model, batch=2, text=(5, 6, 7, 8, 9))
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    labels[1, -4:-1] = ids[1, -4:-1]
    pixels = torch.randn(2, 3, 56, 56)
    full = model(ids, pixel_values=pixels, labels=labels)
    full.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    fast = model(ids, pixel_values=pixels, labels=labels, answer_logits_only=True)
    fast.loss.backward()
    assert fast.logits.shape == (5, full.logits.shape[-1])
    torch.testing.assert_close(fast.loss, full.loss)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name], msg=name)
    model.zero_grad()
    empty = model(ids, pixel_values=pixels, labels=torch.full_like(ids, -100), answer_logits_only=True)
    assert empty.loss.item() == 0.0


def test_cached_decoding_matches_one_full_pass() -> None:
    model = tiny_model()
    pixels = torch.randn(1, 3, 56, 56)
    full = prompt(model, text=(5, 6, 7, 8))
    reference = model(full, pixel_values=pixels).logits[0, -1]
    first = model(full[:, :-1], pixel_values=pixels, use_cache=True)
    step = model(full[:, -1:], pixel_values=pixels, past_key_values=first.cache, use_cache=True)
    assert torch.allclose(step.logits[0, -1], reference, atol=1e-5)


def test_same_seed_same_weights() -> None:
    a, b = tiny_model(seed=3).state_dict(), tiny_model(seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["projector.0.weight"], tiny_model(seed=4).state_dict()["projector.0.weight"])


def test_quantization_needs_a_pretrained_llm() -> None:
    with pytest.raises(ValueError, match="4bit quantization needs a pretrained LLM"):
        EarthGPT.from_config(get_preset("tiny"), pretrained=False, load_4bit=True)
    with pytest.raises(ValueError, match="not both"):
        EarthGPT.from_config(get_preset("tiny"), pretrained=True, load_4bit=True, load_8bit=True)


@pytest.mark.parametrize("preset", ["nano", "7b", "13b"])
def test_shrunken_presets_build_and_train_a_step(preset: str) -> None:
    config = shrink_for_test(get_preset(preset))
    model = EarthGPT.from_config(config, pretrained=False)
    assert type(model.llm).__name__ == "LlamaForCausalLM"
    assert model.config.cnn.arch == get_preset(preset).cnn.arch
    # the real presets normalise each visual source (ViT layer, CNN stage) before projecting
    assert model.projector[0].groups == model.vision.channel_groups
    assert sum(model.vision.channel_groups) == model.vision.out_channels
    ids = prompt(model, batch=2)
    out = model(ids, pixel_values=torch.randn(2, 3, config.image_size, config.image_size), labels=ids)
    assert out.logits.shape == (2, ids.shape[1], config.llm.vocab_size)
    assert torch.isfinite(out.loss)
