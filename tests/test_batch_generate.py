"""Batched greedy generation (:mod:`earthgpt.batch_generate`) gives exactly the answers of one chat
per window: the tiny random model in float32, prompts of different lengths (left padding), rows that
end at a stop id, at the length limit or by the detection stop rule (dropped from the batch)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from test_app_scene import TileChat, _args, _scene
from test_inference import loud_tiny_model
from test_processor import tiny_processor

import earthgpt.batch_generate as batch_generate
from app import handlers as H
from app.scene import scene_steps
from app.session_io import Session
from earthgpt.batch_generate import (
    BufferedKVCache,
    answer_batch,
    encode_batch,
    greedy_batch,
    prompt_ids,
    shared_prefix,
)
from earthgpt.commands import detect as detect_cmd
from earthgpt.inference import ChatSession, generate
from earthgpt.scene_detection import DEFAULT_BATCH_SIZE, chat_answerer, detection_stop_rule

QUESTIONS = [
    "What is this?",
    "Detect all objects shown in the remote sensing image and describe using horizontal bounding boxes.",
    "Hi",
    "Describe the harbour and every ship in it, please.",
    "airport",
]
NEWLINE_BOOST = 9.0
"""Scales the newline's output row: the babbling model then writes lines, so the stop rule has lines
to refuse, and answers end at different steps (a stop id, a refused line, the limit)."""


@pytest.fixture(scope="module")
def chatty():
    """The tiny model with large random weights (it babbles rather than repeating one token)."""
    processor = tiny_processor()
    model = loud_tiny_model(processor.config)
    with torch.no_grad():
        model.llm.lm_head.weight[processor.tokenizer.convert_tokens_to_ids("Ċ")] *= NEWLINE_BOOST
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(len(QUESTIONS))]
    return model, processor, images


def one_by_one(model, processor, images, questions, rule, max_new_tokens=40):
    """Today's path: a fresh ChatSession per window."""
    answers = []
    for image, question in zip(images, questions, strict=True):
        chat = ChatSession(model, processor, sensor="sar")
        chat.set_image(image)
        text = chat.ask(question, max_new_tokens=max_new_tokens, stop_rule=rule)
        answers.append((text, chat.finish_reason, chat.answer_ids))
    return answers


@pytest.mark.parametrize("guard", ["none", "detection_stop_rule"])
def test_batched_answers_equal_one_chat_per_window(chatty, guard) -> None:
    model, processor, images = chatty
    rule = detection_stop_rule() if guard != "none" else None
    expected = one_by_one(model, processor, images, QUESTIONS, rule)
    batched = answer_batch(model, processor, images, QUESTIONS, sensor="sar", max_new_tokens=40,
                           stop_rule=rule)
    assert [(a.text, a.finish_reason, a.ids) for a in batched] == expected
    reasons = [reason for _, reason, _ in expected]
    lengths = {len(ids) for _, _, ids in expected}
    if rule is None:  # a row ends at a stop id while the others run to the limit
        assert {"end", "length"} <= set(reasons)
    else:  # the rule ends rows at different steps
        assert "rule" in reasons and len(lengths) > 1


@pytest.mark.parametrize("guard", ["none", "detection_stop_rule"])
def test_one_question_for_every_window_shares_its_text_before_the_image(chatty, guard, monkeypatch) -> None:
    """Detection asks every window the same question: the system prompt and turn header are
    prefilled once (one row), and the answers are still those of one chat per window."""
    model, processor, images = chatty
    rule = detection_stop_rule() if guard != "none" else None
    question = QUESTIONS[1]
    ids = prompt_ids(processor, question, "sar")
    assert shared_prefix([ids] * len(images), model.image_token_id) == ids.index(model.image_token_id) > 0
    rows_fed = []
    step = batch_generate._step

    def counting_step(model, ids, *args):
        rows_fed.append(tuple(ids.shape))
        return step(model, ids, *args)

    monkeypatch.setattr(batch_generate, "_step", counting_step)
    expected = one_by_one(model, processor, images, [question] * len(images), rule)
    batched = answer_batch(model, processor, images, [question] * len(images), sensor="sar",
                           max_new_tokens=40, stop_rule=rule)
    assert [(a.text, a.finish_reason, a.ids) for a in batched] == expected
    shared = ids.index(model.image_token_id)
    assert rows_fed[:2] == [(1, shared), (len(images), len(ids) - shared)]


def test_shared_prefix_stops_at_the_image_and_at_padding() -> None:
    image = 99
    assert shared_prefix([[1, 2, image, 5], [1, 2, image, 6]], image) == 2
    assert shared_prefix([[1, 2, 3, 5], [1, 2, 4, 5]], image) == 2  # where the texts part
    assert shared_prefix([[1, 2, 3], [1, 2, 3]], image) == 2  # at least one id left to feed
    assert shared_prefix([[1, 2, 3], [0, 1, 2, 3]], image) == 0  # left padding: columns differ
    assert shared_prefix([[1, 2, 3]], image) == 0  # one row: nothing to share
    assert shared_prefix([[image, 1], [image, 1]], image) == 0


def test_buffered_cache_holds_what_a_dynamic_cache_holds() -> None:
    """Keys and values after prefill, decode steps, dropping rows, repeating rows and a crop equal
    a ``DynamicCache``'s; a decode step writes into the buffer instead of reallocating it."""
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(0)
    buffered, plain = BufferedKVCache(), DynamicCache()

    def feed(rows: int, tokens: int) -> None:
        for layer in range(2):
            k, v = (torch.randn(rows, 3, tokens, 4, generator=gen) for _ in range(2))
            got, want = buffered.update(k, v, layer), plain.update(k, v, layer)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))

    def same() -> bool:
        return buffered.get_seq_length() == plain.get_seq_length() and all(
            torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
            for a, b in zip(buffered.layers, plain.layers, strict=True))

    feed(1, 5)
    buffered.batch_repeat_interleave(4)
    plain.batch_repeat_interleave(4)
    feed(4, 7)
    storage = buffered.layers[0].keys.untyped_storage().data_ptr()
    for _ in range(3):
        feed(4, 1)
    assert buffered.layers[0].keys.untyped_storage().data_ptr() == storage  # written in place
    index = torch.tensor([0, 2, 3])
    buffered.batch_select_indices(index)
    plain.batch_select_indices(index)
    feed(3, 1)
    assert same()
    buffered.crop(-2)
    plain.crop(-2)
    assert same() and buffered.get_seq_length() == 14
    feed(3, 40)  # past the buffer's room: it grows and keeps what it held
    assert same() and buffered.get_seq_length() == 54


def test_greedy_batch_pads_prompts_of_different_lengths(chatty) -> None:
    model, processor, images = chatty
    prompts = [prompt_ids(processor, q) for q in QUESTIONS[:3]]
    assert len({len(p) for p in prompts}) == 3
    features = encode_batch(model, processor, images[:3])
    batched = greedy_batch(model, prompts, features, max_new_tokens=12, pad_id=processor.pad_token_id)
    assert batched == [generate(model, torch.tensor([p]), features[i : i + 1], max_new_tokens=12)
                       for i, p in enumerate(prompts)]


def test_greedy_batch_drops_a_row_that_ends(chatty) -> None:
    model, processor, images = chatty
    prompts = [prompt_ids(processor, q) for q in QUESTIONS[:2]]
    features = encode_batch(model, processor, images[:2])
    seen: list[int] = []

    def end_row_zero(row: int, token: int) -> bool:
        seen.append(row)
        return row == 0

    made = greedy_batch(model, prompts, features, max_new_tokens=6, pad_id=processor.pad_token_id,
                        on_token=end_row_zero)
    assert [len(ids) for ids in made] == [1, 6]
    assert seen == [0, 1, 1, 1, 1, 1, 1]  # row 0 left the batch after its first id
    assert made[1] == generate(model, torch.tensor([prompts[1]]), features[1:2], max_new_tokens=6)


def test_cancel_cuts_every_row_being_written(chatty) -> None:
    model, processor, images = chatty
    full = answer_batch(model, processor, images[:3], QUESTIONS[:3], max_new_tokens=20)
    checks = iter(range(1000))
    cut = answer_batch(model, processor, images[:3], QUESTIONS[:3], max_new_tokens=20,
                       cancelled=lambda: next(checks) >= 6)
    assert [a.finish_reason for a in cut] == ["closed"] * 3
    assert all(len(c.ids) <= 3 and f.ids[: len(c.ids)] == c.ids for c, f in zip(cut, full, strict=True))


def test_chat_answerer_answers_chat_sessions_together(chatty, monkeypatch) -> None:
    model, processor, images = chatty
    calls = []
    monkeypatch.setattr(batch_generate, "answer_batch",
                        lambda *a, **k: calls.append(len(a[2])) or answer_batch(*a, **k))
    answer = chat_answerer(lambda: ChatSession(model, processor, sensor="sar"), QUESTIONS[1], 40,
                           stop_rule=detection_stop_rule())
    together = answer(images[:4])
    alone = [text for image in images[:4] for text in answer([image])]
    assert calls == [4]  # one batch; windows alone go through ChatSession.ask
    assert [(t, t.hit_limit, t.stopped) for t in together] == [(t, t.hit_limit, t.stopped) for t in alone]


def test_detect_gives_the_same_answers_in_batches(chatty, tmp_path: Path) -> None:
    model, processor, _ = chatty
    image = _scene(tmp_path)  # 6 windows of 200 px

    def new_chat(sensor):
        return ChatSession(model, processor, sensor=sensor.value)

    answers = {}
    for size in (1, 4):
        args = _args(image, tmp_path / f"out{size}.geojson", **{"batch-size": size, "max-new-tokens": 24})
        result, _ = detect_cmd.detect_file(args, new_chat, "tiny")
        answers[size] = [(tile, str(text), text.hit_limit, text.stopped) for tile, text in result.answers]
    assert len(answers[1]) == 6 and answers[4] == answers[1]


def test_batch_size_option_keeps_its_old_name() -> None:
    parser = argparse.ArgumentParser()
    detect_cmd.add_arguments(parser)
    sizes = [parser.parse_args(["a.tif", "--out", "o.gpkg", *extra]).batch
             for extra in ([], ["--batch-size", "5"], ["--batch", "3"])]
    assert sizes == [DEFAULT_BATCH_SIZE, 5, 3]


def test_the_app_answers_as_many_windows_at_once_as_its_engine_says(tmp_path: Path) -> None:
    engine = H.Engine("scripted", lambda sensor: TileChat(), scene_batch_size=4)
    session = H.load_image(Session(), _scene(tmp_path))  # 6 windows: 2 batches of 3
    steps = scene_steps(session, engine, tile=200, overlap=40)
    assert [result.tiles_done for _, result in steps] == [0, 3, 6]


def test_prompt_ids_are_what_a_fresh_chat_feeds(chatty) -> None:
    model, processor, images = chatty
    chat = ChatSession(model, processor, sensor="sar")
    chat.set_image(images[0])
    chat.ask(QUESTIONS[0], max_new_tokens=1)
    assert prompt_ids(processor, QUESTIONS[0], "sar") == chat._cached_ids  # the prompt, nothing else fed


def test_bad_batches_are_refused(chatty) -> None:
    model, processor, images = chatty
    with pytest.raises(ValueError, match="one question per image: 2 images, 1 questions"):
        answer_batch(model, processor, images[:2], QUESTIONS[:1])
    with pytest.raises(ValueError, match="none empty"):
        greedy_batch(model, [[1, 2], []])
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        greedy_batch(model, [[1, 2]], max_new_tokens=0)
