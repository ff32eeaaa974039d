"""Stop rules (an answer that repeats itself ends early) and restoring a conversation into a new
ChatSession: pure text tests, a scripted generator, and the tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
from test_inference import QUESTIONS, full_recompute, parts  # noqa: F401 - parts is a fixture

import earthgpt.inference as inference
from earthgpt.answer_stream import LineGate, repeats_a_line
from earthgpt.inference import ChatSession
from earthgpt.scene_detection import chat_answerer, detection_stop_rule

LOOP = "car [100, 100, 300, 300]\ncar [161, 161, 161, 161]\ncar [161, 161, 161, 161]\n" * 20


def test_repeats_a_line_ignores_blank_lines_and_spacing() -> None:
    assert not repeats_a_line(["ship [1, 2, 3, 4]"])
    assert not repeats_a_line(["ship [1, 2, 3, 4]", "", ""])
    assert repeats_a_line(["ship [1, 2, 3, 4]", "plane [5, 6, 7, 8]", " ship [1, 2, 3, 4] "])


def test_gate_holds_lines_back_and_drops_the_refused_one() -> None:
    gate = LineGate(repeats_a_line)
    pieces = ["sh", "ip [1, 2, 3, 4]\npl", "ane [5", ", 6, 7, 8]\nship [1, 2, 3, 4]\nmore"]
    shown = [gate.push(piece) for piece in pieces]
    assert shown == ["", "ship [1, 2, 3, 4]\n", "", "plane [5, 6, 7, 8]\n"]
    assert gate.refused and gate.push("anything\n") == "" and gate.close() == ""
    assert gate.text == "ship [1, 2, 3, 4]\nplane [5, 6, 7, 8]\n"
    free = LineGate(None)
    assert [free.push(p) for p in ["a\na", "\n"]] == ["a\na", "\n"] and free.close() == ""
    last = LineGate(repeats_a_line)
    assert last.push("x\nx") == "x\n" and last.close() == "" and last.text == "x\n"  # the final line too


@pytest.mark.parametrize(("answer", "kept"), [
    ("ship [1, 2, 30, 40]\nship [1, 2, 30, 40]\nship [1, 2, 30, 40]", 1),  # a repeated line
    ("person [160, 160, 160, 165]\nperson [165, 165, 165, 170]\nperson [170, 170, 170, 180]\n"
     "person [180, 180, 180, 200]", 1),  # an empty box sliding along the diagonal
    ("person [166, 166, 191, 191]\nperson [166, 191, 191, 201]\nperson [166, 201, 191, 221]\n"
     "person [166, 221, 191, 241]\nperson [166, 241, 191, 261]", 3),  # a box sliding down a column
    ("car [10, 10, 20, 20]\ncar [20, 10, 30, 20]\ncar [30, 10, 40, 20]\ncar [40, 10, 50, 20]", 3),
    ("ship [1, 2, 30, 40]\nplane [5, 6, 70, 80]\nship [10, 20, 300, 400]\ncar [0, 0, 10, 10]", 4),
    # a row of one height walking left, gaps and widths varying (nano v4 on DOTA P0706)
    ("car [300, 300, 320, 350]\ncar [280, 300, 300, 350]\ncar [260, 300, 280, 350]\n"
     "car [250, 300, 280, 350]\ncar [240, 300, 260, 350]", 3),
    # a column of one width walking down (nano v4 on DOTA P1888)
    ("car [302, 221, 322, 280]\ncar [302, 236, 323, 285]\ncar [302, 262, 323, 309]\n"
     "car [302, 301, 323, 340]\ncar [302, 353, 323, 389]\ncar [302, 398, 323, 436]\n"
     "car [302, 405, 323, 442]\ncar [302, 458, 323, 492]", 4),
    # one box moved by the same step each time, along the diagonal
    ("car [300, 300, 350, 350]\ncar [350, 350, 400, 400]\ncar [400, 400, 450, 450]\n"
     "car [450, 450, 500, 500]\ncar [500, 500, 550, 550]", 3),
    # oriented boxes are compared by their enclosing boxes (nano v4's OBB answer on DOTA P0706)
    ("car [300, 300, 320, 300, 320, 320, 300, 320]\ncar [320, 320, 340, 320, 340, 340, 320, 340]\n"
     "car [350, 320, 370, 320, 370, 340, 350, 340]\ncar [380, 320, 400, 320, 400, 340, 380, 340]\n"
     "car [400, 320, 420, 320, 420, 340, 400, 340]\ncar [420, 320, 440, 320, 440, 340, 420, 340]\n"
     "car [450, 320, 470, 320, 470, 340, 450, 340]", 4),
    # a real column of parked bicycles (HIT-UAV 0_110_90_0_08552's reference answer): near, not
    # exactly, one width, so it is kept whole
    ("bicycle [584, 252, 634, 271]\nbicycle [591, 201, 642, 240]\nbicycle [592, 166, 641, 191]\n"
     "bicycle [586, 96, 645, 137]\nbicycle [592, 57, 644, 78]\nbicycle [588, 21, 641, 47]", 6),
    # three marching boxes, then one that breaks the row, then a march of another class
    ("car [10, 10, 20, 20]\ncar [22, 10, 32, 20]\ncar [34, 10, 44, 20]\ncar [46, 11, 56, 20]\n"
     "van [10, 50, 20, 60]\ncar [58, 10, 68, 20]", 6),
])
def test_detection_stop_rule(answer: str, kept: int) -> None:
    gate = LineGate(detection_stop_rule())
    gate.push(answer + "\n")
    gate.close()
    assert gate.lines == answer.splitlines()[:kept]


@pytest.fixture
def scripted_tokens(parts, monkeypatch):  # noqa: F811 - the fixture imported above
    """Replace the model's token loop with one that 'generates' the ids of :data:`LOOP`; counts the
    ids it was asked for (the cost of the answer)."""
    _, processor, _ = parts
    ids = processor.tokenizer(LOOP, add_special_tokens=False)["input_ids"]
    pulled: list[int] = []

    def scripted(model, input_ids, image_features=None, *, cache, max_new_tokens, **_):
        for token in ids[:max_new_tokens]:
            pulled.append(token)
            yield token

    monkeypatch.setattr(inference, "iter_generate", scripted)
    return pulled


def test_a_looping_answer_stops_at_the_repeated_line(parts, scripted_tokens) -> None:  # noqa: F811
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    full = session.ask("Detect all objects.", max_new_tokens=1000)
    assert session.finish_reason == "length" and full == LOOP[: len(full)]
    spent = len(scripted_tokens)
    session.reset()
    scripted_tokens.clear()
    pieces = list(session.ask("Detect all objects.", max_new_tokens=1000, stream=True,
                              stop_rule=repeats_a_line))
    assert "".join(pieces) == "car [100, 100, 300, 300]\ncar [161, 161, 161, 161]\n"
    assert session.finish_reason == "rule" and session.history[-1][1] == "".join(pieces)
    assert len(scripted_tokens) < spent / 10  # stopped at the third line, not the limit


def test_the_kept_part_is_the_context_of_the_next_turn(parts, monkeypatch) -> None:  # noqa: F811
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    ids = processor.tokenizer("a\nb\na\nc", add_special_tokens=False)["input_ids"]
    real = inference.iter_generate
    monkeypatch.setattr(inference, "iter_generate", lambda *a, **k: (token for token in ids))
    assert session.ask(QUESTIONS[0], stop_rule=repeats_a_line) == "a\nb\n"
    monkeypatch.setattr(inference, "iter_generate", real)
    expected = full_recompute(model, processor, session.image_features, session.conversation.turns,
                              QUESTIONS[1], max_new_tokens=6)
    session.ask(QUESTIONS[1], max_new_tokens=6)
    assert session.answer_ids == expected and session.finish_reason in ("end", "length")


def test_a_rule_that_refuses_nothing_changes_nothing(parts) -> None:  # noqa: F811
    model, processor, image = parts
    session = ChatSession(model, processor)
    session.set_image(image)
    plain = session.ask(QUESTIONS[0], max_new_tokens=10)
    session.reset()
    gated = session.ask(QUESTIONS[0], max_new_tokens=10, stop_rule=lambda lines: False)
    assert gated == plain and session.finish_reason == "length"


def test_restore_gives_a_new_session_the_earlier_turns(parts) -> None:  # noqa: F811
    model, processor, image = parts
    first = ChatSession(model, processor, sensor="sar")
    first.set_image(image)
    first.ask(QUESTIONS[0], max_new_tokens=5)
    first.ask(QUESTIONS[1], max_new_tokens=5)
    again = ChatSession(model, processor, sensor="sar")
    again.set_image(image)
    again.restore(first.history)
    assert again.conversation.turns == first.conversation.turns and again.history == first.history
    assert again.conversation.turns[0].text.startswith("This is a SAR image.")
    expected = full_recompute(model, processor, first.image_features, first.conversation.turns,
                              QUESTIONS[2], max_new_tokens=6)
    assert again.ask(QUESTIONS[2], max_new_tokens=6) == first.ask(QUESTIONS[2], max_new_tokens=6)
    assert again.answer_ids == expected and again.turns == 3
    with pytest.raises(ValueError, match="question, answer"):
        again.restore([("", "x")])
    with pytest.raises(RuntimeError, match="set_image"):
        ChatSession(model, processor).restore(first.history)


class Streaming:
    """A scripted chat that streams :data:`LOOP` word by word through the stop rule, as ChatSession does."""

    def set_image(self, rgb: np.ndarray) -> None:
        self.pulled = 0

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, stop_rule=None):
        gate = LineGate(stop_rule)
        self.finish_reason = "length"
        for word in LOOP.split(" "):
            self.pulled += 1
            piece = gate.push(word + " ")
            if piece:
                yield piece
            if gate.refused:
                self.finish_reason = "rule"
                return


def test_chat_answerer_stops_repeats_and_cuts_the_answer_when_cancelled() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    (answer,) = chat_answerer(Streaming, "Detect", stop_rule=detection_stop_rule())([image])
    assert answer.stopped and not answer.hit_limit and answer.count("\n") == 2
    (looping,) = chat_answerer(Streaming, "Detect")([image])
    assert looping.hit_limit and not looping.stopped and len(looping) > 10 * len(answer)
    cancel: list[bool] = []
    chat = Streaming()
    answerer = chat_answerer(lambda: chat, "Detect", cancelled=lambda: bool(cancel))
    (whole,) = answerer([image])
    cancel.append(True)
    (cut,) = answerer([image])
    assert chat.pulled == 1 and not cut.stopped and 0 < len(cut) < len(whole)
