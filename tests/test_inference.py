"""Generation and ChatSession on the tiny random model: the cached multi-turn path equals a full recompute."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_conversation import tiny_tokenizer
from test_processor import tiny_processor

from earthgpt.conversation import Conversation, PromptTooLongError
from earthgpt.inference import ChatSession, IncrementalDecoder, generate, sample_token
from earthgpt.model.earthgpt import EarthGPT

QUESTIONS = ["What is the category of this image?", "How many planes are there?", "Describe the harbour."]


@pytest.fixture(scope="module")
def parts():
    processor = tiny_processor()
    model = EarthGPT.from_config(processor.config, pretrained=False, seed=3)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return model, processor, image


def loud_tiny_model(config) -> EarthGPT:
    """The tiny model with large random weights (unit-variance matrices): it babbles rather than
    repeating one token."""
    model = EarthGPT.from_config(config, pretrained=False, seed=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.llm.parameters():
            if param.ndim == 2:
                param.copy_(torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def loud_model(parts):
    """The loud tiny model babbles byte tokens that are not valid UTF-8, so its answers re-tokenize
    differently from what it generated (the cache-crop path)."""
    return loud_tiny_model(parts[1].config)


def full_recompute(model, processor, features, turns, question, max_new_tokens):
    """The baseline: render the whole conversation and run it from scratch, no cache kept."""
    conv = Conversation(turns=list(turns)).add_human(question)
    ids = processor.tokenize(conv)["input_ids"]
    return generate(model, torch.tensor([ids]), features, max_new_tokens=max_new_tokens,
                    stop_ids=processor.stop_token_ids)


def test_cached_generation_equals_recomputing_every_step(parts):
    model, processor, image = parts
    features = model.encode_images(processor.preprocess_image(image)[None])
    ids = torch.tensor([processor.tokenize(Conversation().add_human("What is this?"))["input_ids"]])
    cached = generate(model, ids, features, max_new_tokens=12)
    naive, seq = [], ids
    with torch.inference_mode():
        for _ in range(12):
            naive.append(int(model(seq, image_features=features).logits[0, -1].argmax()))
            seq = torch.cat([seq, torch.tensor([[naive[-1]]])], dim=1)
    assert cached == naive


@pytest.mark.parametrize("which", ["quiet", "loud"])
def test_three_turns_match_full_recompute_and_feed_only_the_new_turn(parts, loud_model, which):
    model, processor, image = parts
    model = loud_model if which == "loud" else model
    session = ChatSession(model, processor)
    session.set_image(image)
    previous_prompt = 0
    for i, question in enumerate(QUESTIONS):
        cached_before = len(session._cached_ids)
        expected = full_recompute(model, processor, session.image_features, session.conversation.turns,
                                  question, max_new_tokens=10)
        answer = session.ask(question, max_new_tokens=10)
        assert session.answer_ids == expected, f"turn {i + 1}"
        assert answer == processor.tokenizer.decode(expected, skip_special_tokens=True)
        assert session.reused_tokens >= previous_prompt  # image and history come from the cache
        if which == "quiet" and i > 0:
            assert session.reused_tokens == cached_before  # everything cached was reusable
        if which == "loud" and i > 0:
            assert session.reused_tokens < cached_before  # the answer re-tokenized: the cache was cropped
        previous_prompt = session.reused_tokens + session.fed_tokens
    assert session.turns == 3
    assert [q for q, _ in session.history] == QUESTIONS


def plain_answer(model, processor, features, turns, question, max_new_tokens):
    """The slowest correct answer: every step re-runs the whole conversation, no KV cache, the LM
    head on every position (what the cached, last-position-only path must reproduce)."""
    ids = processor.tokenize(Conversation(turns=list(turns)).add_human(question))["input_ids"]
    answer = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + answer]), image_features=features).logits[0, -1].argmax())
            if token in processor.stop_token_ids:
                break
            answer.append(token)
    return answer


@pytest.mark.parametrize("which", ["quiet", "loud"])
def test_ten_turns_give_the_uncached_full_head_answers(parts, loud_model, which):
    model, processor, image = parts
    model = loud_model if which == "loud" else model
    session = ChatSession(model, processor)
    session.set_image(image)
    for turn in range(10):
        question = f"airport {turn}?"
        expected = plain_answer(model, processor, session.image_features, session.conversation.turns,
                                question, max_new_tokens=6)
        session.ask(question, max_new_tokens=6)
        assert session.answer_ids == expected, f"turn {turn + 1}"
    assert session.fed_tokens < session.reused_tokens  # the last turn came mostly from the cache


def test_divergent_history_crops_the_cache_and_still_matches(parts):
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    session.ask(QUESTIONS[0], max_new_tokens=6)
    session.conversation.turns[-1].text = "airport"  # what was cached no longer matches the rendering
    before = len(session._cached_ids)
    expected = full_recompute(model, processor, session.image_features, session.conversation.turns,
                              QUESTIONS[1], max_new_tokens=8)
    session.ask(QUESTIONS[1], max_new_tokens=8)
    assert session.answer_ids == expected
    assert processor.config.num_visual_tokens < session.reused_tokens < before


def test_stream_yields_the_answer_in_pieces_and_records_the_turn(parts):
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    pieces = session.ask(QUESTIONS[0], max_new_tokens=8, stream=True)
    assert session.turns == 0  # nothing happens until the stream is read
    text = "".join(pieces)
    assert session.turns == 1 and session.history[0] == (QUESTIONS[0], text)
    stream = session.ask(QUESTIONS[1], max_new_tokens=8, stream=True)
    next(stream, None)
    stream.close()  # abandoned early: the partial answer is kept and the cache stays consistent
    assert session.turns == 2
    assert session._cache.get_seq_length() == len(session._cached_ids)
    expected = full_recompute(model, processor, session.image_features, session.conversation.turns,
                              QUESTIONS[2], max_new_tokens=6)
    session.ask(QUESTIONS[2], max_new_tokens=6)
    assert session.answer_ids == expected


def test_a_failed_turn_is_dropped_and_the_session_recovers(parts):
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    session.ask(QUESTIONS[0], max_new_tokens=4)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    model.forward = broken
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            session.ask(QUESTIONS[1], max_new_tokens=4)
    finally:
        del model.forward
    assert session.turns == 1 and len(session.conversation.turns) == 2
    expected = full_recompute(model, processor, session.image_features, session.conversation.turns,
                              QUESTIONS[2], max_new_tokens=5)
    session.ask(QUESTIONS[2], max_new_tokens=5)
    assert session.answer_ids == expected and session.reused_tokens == 0  # rebuilt from scratch


def test_a_stale_stream_is_refused(parts):
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    stale = session.ask(QUESTIONS[0], max_new_tokens=2, stream=True)
    session.ask(QUESTIONS[1], max_new_tokens=2)
    with pytest.raises(RuntimeError, match="ask it again"):
        next(stale)
    assert session.turns == 1


def test_image_is_encoded_once_and_reset_keeps_it(parts):
    model, processor, image = parts
    calls = []
    original = model.encode_images

    def counting(pixels):
        calls.append(pixels.shape)
        return original(pixels)

    model.encode_images = counting
    try:
        session = ChatSession(model, processor)
        session.set_image(image)
        session.ask(QUESTIONS[0], max_new_tokens=3)
        session.ask(QUESTIONS[1], max_new_tokens=3)
        session.reset()
        assert session.turns == 0
        session.ask(QUESTIONS[2], max_new_tokens=3)
    finally:
        del model.encode_images
    assert len(calls) == 1


def test_bad_questions_leave_the_session_unchanged(parts):
    model, processor, image = parts
    session = ChatSession(model, processor)
    with pytest.raises(RuntimeError, match="set_image"):
        session.ask("hello")
    session.set_image(image)
    with pytest.raises(ValueError, match="empty"):
        session.ask("   ")
    session.ask("first", max_new_tokens=2)
    with pytest.raises(ValueError, match="only the first human turn"):
        session.ask("look at <image> again")
    assert session.turns == 1
    session.ask("second", max_new_tokens=2)
    assert session.turns == 2


def test_sampling_is_seeded_and_top_p_near_zero_is_greedy(parts):
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    a = session.ask("q", max_new_tokens=6, temperature=1.0, seed=7)
    session.reset()
    b = session.ask("q", max_new_tokens=6, temperature=1.0, seed=7)
    assert a == b
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample_token(logits, temperature=1.0, top_p=1e-6, generator=torch.Generator().manual_seed(0)) == 1
    assert sample_token(logits) == 1


def test_incremental_decoder_holds_back_split_characters():
    tokenizer = tiny_tokenizer()
    text = "héllo 中文 🌍 airport"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(t) for t in ids] + [decoder.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text == decoder.text


def test_model_and_processor_must_agree_on_the_image_token(parts):
    processor = parts[1]

    class Other:
        image_token_id = processor.image_token_id + 1

    with pytest.raises(ValueError, match="disagree"):
        ChatSession(Other(), processor)


def test_a_question_longer_than_the_context_is_refused_before_it_runs(parts):
    """Review of 2026-12-04: a question of 35k tokens to an 8k model ran its prefill for 14 minutes."""
    model, processor, image = parts
    chat = ChatSession(model, processor)
    chat.set_image(image)
    limit = model.llm.config.max_position_embeddings
    with pytest.raises(PromptTooLongError, match=f"at most {limit:,} with its answer: shorten the question$"):
        chat.ask("word " * limit)
    assert not chat.conversation.turns and chat.fed_tokens == 0  # nothing ran, nothing was kept
    chat.ask("What is this?", max_new_tokens=2)
    with pytest.raises(PromptTooLongError, match=r"conversation so far .* or start a new conversation"):
        chat.ask("word " * limit)
    assert len(chat.conversation.turns) == 2


def test_an_answer_ends_where_the_context_ends(parts, loud_model, monkeypatch):
    _, processor, image = parts
    chat = ChatSession(loud_model, processor)
    chat.set_image(image)
    prompt = len(processor.tokenize(Conversation().add_human(chat._with_sensor("Describe.")))["input_ids"])
    monkeypatch.setattr(loud_model.llm.config, "max_position_embeddings", prompt + 20)
    chat.ask("Describe.", max_new_tokens=200)
    assert len(chat.answer_ids) <= 20


# ----------------------------------------------------------------------------- the chat command


@pytest.fixture
def png(tmp_path):
    from PIL import Image

    path = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tiny_chat(parts, monkeypatch):
    """``earthgpt chat`` with the tiny model standing in for the loaded one."""
    import earthgpt.inference

    model, processor, _ = parts
    monkeypatch.setattr(earthgpt.inference, "load_model", lambda *a, **k: (model, processor))


def test_chat_json_reports_answer_boxes_and_the_untrained_warning(tiny_chat, png, capsys):
    import json

    from earthgpt.cli import main

    args = ["chat", str(png), "Detect all objects.", "--json", "--max-new-tokens", "5", "--model", "tiny"]
    assert main(args) == 0  # a preset with no shipped weights: its untrained start
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert set(report) == {"answer", "detections", "invalid", "skipped", "model", "image", "sensor",
                           "warning"}
    assert isinstance(report["answer"], str) and report["model"] == "tiny" and report["image"] == str(png)
    assert "projector" in report["warning"] and err.startswith("WARNING:")
    assert main(["chat", str(png), "q", "--json", "--max-new-tokens", "2", "--model", str(png.parent)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warning"] is None and "WARNING" not in err  # a checkpoint folder is trained


def test_chat_streams_the_answer_with_the_sensor_named(tiny_chat, parts, png, capsys):
    from earthgpt.cli import main

    assert main(["chat", str(png), "What is this?", "--sensor", "sar", "--max-new-tokens", "4"]) == 0
    out, _ = capsys.readouterr()
    assert out.endswith("\n")


def test_json_report_gives_grid_and_pixel_boxes():
    from earthgpt.commands.chat import json_report

    report = json_report("plane [100, 200, 300, 400]\ncar [161, 161, 161, 161]\nbroken [1, 2", (2000, 1000),
                         model="m", image="i", sensor=None, warning=None)
    plane = {"label": "plane", "kind": "hbb", "box_grid": [100, 200, 300, 400]}
    assert report["detections"] == [{**plane, "box_pixels": [200, 200, 600, 400]}]
    assert report["invalid"] == [{"label": "car", "box_text": "[161, 161, 161, 161]", "reason": "zero area"}]
    assert report["skipped"] == 1


@pytest.mark.parametrize(
    ("make", "prompt", "message"),
    [
        (lambda d: d / "missing.png", "q", "image not found"),
        (lambda d: _write(d / "bad.png", b"not a png"), "q", "cannot read image"),
        (lambda d: _write(d / "bad.tif", b"II*\x00garbage"), "q", "cannot read image"),
        (lambda d: _png(d / "ok.png"), "   ", "prompt is empty"),
        (lambda d: _png(d / "ok.png"), "see <image>", "must not contain"),
    ],
)
def test_chat_bad_input_exits_2_with_a_message(tmp_path, capsys, make, prompt, message):
    from earthgpt.cli import main

    assert main(["chat", str(make(tmp_path)), prompt]) == 2
    _, err = capsys.readouterr()
    assert message in err and "Traceback" not in err


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _png(path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def test_nano_three_turns_match_full_recompute(nano_base):
    """The real SmolLM2 template and tokenizer: cached follow-ups give the full recompute's tokens."""
    from earthgpt.inference import load_model
    from earthgpt.tasks import sensor_sentence

    model, processor = load_model("nano")
    session = ChatSession(model, processor, sensor="optical")
    session.set_image(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    for i, question in enumerate(QUESTIONS):
        asked = f"{sensor_sentence('optical')} {question}" if i == 0 else question
        expected = full_recompute(model, processor, session.image_features, session.conversation.turns,
                                  asked, max_new_tokens=12)
        session.ask(question, max_new_tokens=12)
        assert session.answer_ids == expected, f"turn {i + 1}"
    assert session.reused_tokens > processor.config.num_visual_tokens


def test_a_stream_resumed_on_other_threads_builds_no_graph(parts):
    """Gradio steps a streaming answer on whichever worker thread is free. Inference mode is
    thread-local, so each step must enter it itself: a step resumed on a thread where it was never
    entered ran with autograd on (the tiny model's parameters ask for gradients, as a freshly
    loaded checkpoint's trainable ones did), and the KV cache kept every step's graph alive."""
    from concurrent.futures import ThreadPoolExecutor

    _, processor, image = parts
    model = EarthGPT.from_config(processor.config, pretrained=False, seed=3)
    model.llm.requires_grad_(True)  # as the trainable tensors of a checkpoint loaded without load_model
    seen: list[tuple[bool, bool]] = []
    hook = model.llm.register_forward_hook(
        lambda module, args, out: seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
    )
    session = ChatSession(model, processor)
    session.set_image(image)
    pieces = session.ask("Describe the harbour.", max_new_tokens=8, stream=True)
    pools = [ThreadPoolExecutor(1) for _ in range(3)]
    try:
        for step in range(64):
            try:
                pools[step % 3].submit(next, pieces).result()
            except StopIteration:
                break
        leaked = [pool.submit(torch.is_inference_mode_enabled).result() for pool in pools]
    finally:
        hook.remove()
        for pool in pools:
            pool.shutdown()
    assert len(seen) >= 2 and all(not grad and inference for grad, inference in seen)
    assert not any(leaked)  # no thread is left in inference mode by a suspended stream
    assert all(not t.requires_grad for layer in session._cache.layers for t in (layer.keys, layer.values))


def test_chat_command_refuses_a_question_too_long_in_one_line(tiny_chat, png, capsys):
    from earthgpt.cli import main

    assert main(["chat", str(png), "word " * 3000, "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and err[-1].endswith("shorten the question"), err


def test_chat_command_ends_marching_boxes_as_detect_does(tiny_chat, png, monkeypatch, capsys):
    """Review of 2026-12-04: `earthgpt chat` stopped only at a repeated line, so a detection answer
    ran on along a row to the token limit and was cut mid-box."""
    from earthgpt.answer_stream import LineGate
    from earthgpt.cli import main
    from earthgpt.inference import ChatSession

    rules = []
    monkeypatch.setattr(ChatSession, "ask",
                        lambda self, text, **options: rules.append(options["stop_rule"]) or "")
    assert main(["chat", str(png), "Detect all objects.", "--json", "--model", "tiny"]) == 0
    gate = LineGate(rules[0])
    gate.push("".join(f"car [{x}, 10, {x + 10}, 20]\n" for x in range(0, 200, 10)))
    gate.close()
    assert len(gate.lines) == 3  # 20 boxes along a row: it ends at the third that marches on
    assert main(["chat", str(png), "Detect.", "--json", "--model", "tiny", "--keep-repeats"]) == 0
    assert rules[1] is None
