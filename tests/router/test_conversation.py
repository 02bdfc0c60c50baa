import json

import pytest

from router.conversation import parse_conversation
from router.errors import DataError


def test_bare_prompt_is_one_user_turn():
    conv = parse_conversation("What is 2+2?")
    assert conv.n_turns == 1
    assert conv.last_user == "What is 2+2?"
    assert conv.system == ""


def test_messages_keep_system_turns_and_last_user():
    conv = parse_conversation([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Sum 2 and 3"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
    ])
    assert conv.system == "You are terse."
    assert conv.n_turns == 2
    assert conv.last_user == "Sum 2 and 3"
    assert conv.text == "You are terse.\nHi\nHello\nSum 2 and 3"


def test_json_text_of_messages_is_parsed():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert parse_conversation(json.dumps(messages)).to_messages() == messages


def test_text_that_only_looks_like_json_stays_a_prompt():
    assert parse_conversation("[citation needed]").last_user == "[citation needed]"


def test_digest_depends_on_roles_and_content():
    a = parse_conversation([{"role": "user", "content": "x"}])
    b = parse_conversation([{"role": "system", "content": "x"}])
    assert a.digest != b.digest
    assert a.digest == parse_conversation("x").digest


def test_input_tokens_count_text_and_message_overhead():
    conv = parse_conversation([{"role": "user", "content": "a" * 40}])
    assert conv.input_tokens == 10 + 4


@pytest.mark.parametrize(("value", "message"), [
    ([], "messages is empty"),
    ([{"role": "wizard", "content": "x"}], "message 0 has role 'wizard'"),
    (["hi"], "message 0 must be an object"),
    ([{"role": "user", "content": 5}], "content must be a string or a list of parts"),
    (42, "expected a prompt string or a list of messages"),
])
def test_bad_conversations_are_named(value, message):
    with pytest.raises(DataError, match=message):
        parse_conversation(value, where="row 3")
