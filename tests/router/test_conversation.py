import json

import pytest

from router.conversation import invalid_text, parse_conversation
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
    ([{"role": "user", "content": "x\ud800y"}],
     r"message 0 content is not valid Unicode text: a lone surrogate \(U\+D800\) at "
     "character 1"),
    ([{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}],
     r"message 0 content is not valid Unicode text: a lone surrogate \(U\+DFFF\)"),
    ("x\ud800", "the prompt is not valid Unicode text"),
])
def test_bad_conversations_are_named(value, message):
    with pytest.raises(DataError, match=message):
        parse_conversation(value, where="row 3")


def test_valid_non_ascii_text_is_kept_and_hashed():
    conv = parse_conversation([{"role": "user", "content": "caf\u00e9 \U0001f600"}])
    assert conv.last_user == "caf\u00e9 \U0001f600" and len(conv.digest) == 64


def test_invalid_text_names_the_first_bad_field_of_a_json_body():
    body = json.loads('{"model": "router", "messages": [{"role": "user", "content": "ok"}, '
                      '{"role": "user", "content": "x\\ud800"}], "user": "\\udc00"}')
    assert invalid_text(body) == ("messages.1.content", "is not valid Unicode text: a lone "
                                  "surrogate (U+D800) at character 1")
    assert invalid_text({"stop": ["a", "\ud800"]})[0] == "stop.1"
    assert invalid_text({"\ud800": 1})[0] == "body"
    assert invalid_text({"messages": [{"content": "caf\u00e9 \U0001f600"}], "n": 2}) is None
