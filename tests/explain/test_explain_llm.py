"""The LLM explainer and judge against a real local HTTP server: requests, replies, retries, errors."""

from __future__ import annotations

import time

import pytest
import stub_llm
from planted import windows

from mechscope.errors import MechscopeError
from mechscope.explain import (
    ChatClient,
    Example,
    LLMConfig,
    LLMError,
    LLMExplainer,
    LLMSimulator,
    TokenPatternExplainer,
    load_explanations,
    save_explanations,
)
from mechscope.explain.prompts import parse_explanation

REPLY = 'The marked tokens are the word cat after "the".\nExplanation: fires on " cat" after " the"\n'


def config(url: str, **kw) -> LLMConfig:
    base = {
        "base_url": f"{url}/v1",
        "model": "stub-model",
        "timeout_s": 5.0,
        "max_retries": 2,
        "backoff": 0.01,
    }
    return LLMConfig(**{**base, **kw})


def test_explainer_round_trip(tmp_path):
    pos, _ = windows("cat_after_the", 5, 0, seed=0)
    with stub_llm.serve(stub_llm.fixed(REPLY)) as stub:
        e = LLMExplainer(config(stub.url, api_key="sk-test", seed=11, temperature=0.3)).explain(4, pos)
    assert len(stub.requests) == 1
    req = stub.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "stub-model" and body["seed"] == 11 and body["temperature"] == 0.3
    user = body["messages"][-1]["content"]
    assert user.count("<< cat>>(") == sum(len(ex.active_positions()) for ex in pos)
    assert "Example 5:" in user and " the<< cat>>(" in user
    # the reply becomes the explanation; the exact messages and settings are kept, the key is not
    assert e.text == 'fires on " cat" after " the"' and e.explainer == "llm" and e.feature == 4
    assert e.prompt == body["messages"]
    assert (
        e.settings["model"] == "stub-model" and e.settings["seed"] == 11 and e.settings["temperature"] == 0.3
    )
    assert "sk-test" not in repr(e) and "sk-test" not in repr(config(stub.url, api_key="sk-test"))
    path = save_explanations(tmp_path / "ex.json", [e])
    assert "sk-test" not in path.read_text()
    assert load_explanations(path) == [e]


def test_no_key_no_auth_header_and_max_examples():
    pos, _ = windows("dog", 8, 0, seed=1)
    with stub_llm.serve(stub_llm.fixed("Explanation: dogs")) as stub:
        e = LLMExplainer(config(stub.url), max_examples=3, show_activations=False).explain(0, pos)
    assert "Authorization" not in stub.requests[0]["headers"]
    user = stub.requests[0]["body"]["messages"][-1]["content"]
    assert "Example 3:" in user and "Example 4:" not in user and ">>(" not in user
    assert e.text == "dogs"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_then_succeeds(status):
    with stub_llm.serve(stub_llm.scripted([status, status, 200], "Explanation: ok")) as stub:
        text = ChatClient(config(stub.url)).complete([{"role": "user", "content": "hi"}])
    assert text == "Explanation: ok" and len(stub.requests) == 3


def test_gives_up_after_the_retries():
    with stub_llm.serve(stub_llm.scripted([500], "x")) as stub, pytest.raises(LLMError) as err:
        ChatClient(config(stub.url, max_retries=1)).complete([{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 2
    assert "2 attempts" in str(err.value) and "HTTP 500" in str(err.value) and stub.url in str(err.value)


def test_client_error_is_not_retried():
    with stub_llm.serve(stub_llm.scripted([400], "x")) as stub, pytest.raises(LLMError) as err:
        ChatClient(config(stub.url)).complete([{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 1
    msg = str(err.value)
    assert "HTTP 400" in msg and "not retried" in msg and "stub status 400" in msg


def test_unreachable_endpoint_fails_promptly_naming_the_url():
    url = stub_llm.closed_port_url()
    start = time.monotonic()
    with pytest.raises(LLMError) as err:
        ChatClient(LLMConfig(url, "m", timeout_s=1.0, max_retries=2, backoff=0.01)).complete([])
    assert time.monotonic() - start < 5
    assert f"{url}/chat/completions" in str(err.value) and "3 attempts" in str(err.value)
    assert isinstance(err.value, MechscopeError)


def test_timeout_is_retried_then_fails():
    with stub_llm.serve(stub_llm.scripted([200], "late", delay_s=0.6)) as stub:
        with pytest.raises(LLMError, match=r"timeout_s=0\.1") as err:
            ChatClient(config(stub.url, timeout_s=0.1, max_retries=1)).complete(
                [{"role": "user", "content": "x"}]
            )
        assert "2 attempts" in str(err.value)
        time.sleep(0.1)
        assert len(stub.requests) == 2


@pytest.mark.parametrize(
    ("body", "match"),
    [("this is not json", "not JSON"), ('{"id": "x"}', "choices"), ('{"choices": []}', "choices"),
     ('{"choices": [{"message": {"content": null}}]}', "content")],
)  # fmt: skip
def test_malformed_replies(body, match):
    with stub_llm.serve(lambda b, n: (200, body)) as stub, pytest.raises(LLMError, match=match):
        ChatClient(config(stub.url)).complete([{"role": "user", "content": "hi"}])
    assert len(stub.requests) == 1


def test_malformed_judge_replies():
    e = TokenPatternExplainer().explain(0, windows("dog", 10, 0, seed=0)[0])
    tokens = [" a", " dog", " sat"]
    cases = [
        ("0\t0\n1\t10", lambda sim: sim.simulate(e, tokens), "2 lines, expected one per token \\(3\\)"),
        ("0\t0\n2\t10\n1\t0", lambda sim: sim.simulate(e, tokens), "line 2"),
        ("0\t0\n1\t11\n2\t0", lambda sim: sim.simulate(e, tokens), "line 2"),
        ("0\t0\n1\tten\n2\t0", lambda sim: sim.simulate(e, tokens), "line 2"),
        ("maybe", lambda sim: sim.detect(e, tokens), "yes or no"),
        ("", lambda sim: sim.judge_marking(e, tokens, [1]), "yes or no"),
    ]
    for reply, call, match in cases:
        with stub_llm.serve(stub_llm.fixed(reply)) as stub, pytest.raises(LLMError, match=match):
            call(LLMSimulator(config(stub.url)))
    with stub_llm.serve(stub_llm.fixed("0\t0\n1\t10\n2\t0")) as stub:
        assert LLMSimulator(config(stub.url)).simulate(e, tokens).value == [0.0, 1.0, 0.0]


def test_reply_parsing():
    assert parse_explanation("I think...\nExplanation: **the word cat**\nthanks") == "the word cat"
    assert parse_explanation("Some thoughts.\n\nfires on cats\n") == "fires on cats"
    assert parse_explanation('Explanation: "the word cat"') == "the word cat"
    assert parse_explanation('Explanation: fires on " cat"') == 'fires on " cat"'
    assert parse_explanation("explanation:\n  dogs and cats") == "dogs and cats"
    with pytest.raises(LLMError, match="no explanation"):
        parse_explanation("Explanation:   ")


def test_config_from_env():
    env = {"MECHSCOPE_LLM_BASE_URL": "http://h:1/v1/", "MECHSCOPE_LLM_MODEL": "m", "OPENAI_API_KEY": "k"}
    cfg = LLMConfig.from_env(env, timeout_s=3.0)
    assert (cfg.base_url, cfg.model, cfg.api_key, cfg.timeout_s) == ("http://h:1/v1", "m", "k", 3.0)
    cfg = LLMConfig.from_env({"OPENAI_BASE_URL": "https://o/v1", "MECHSCOPE_LLM_MODEL": "m",
                              "MECHSCOPE_LLM_API_KEY": "mine", "OPENAI_API_KEY": "theirs"})  # fmt: skip
    assert cfg.base_url == "https://o/v1" and cfg.api_key == "mine"
    with pytest.raises(LLMError, match="MECHSCOPE_LLM_MODEL") as err:
        LLMConfig.from_env({"MECHSCOPE_LLM_BASE_URL": "http://h/v1"})
    assert "set MECHSCOPE_LLM_MODEL," in str(err.value)
    with pytest.raises(LLMError, match="MECHSCOPE_LLM_BASE_URL"):
        LLMConfig.from_env({})
    with pytest.raises(LLMError, match="http"):
        LLMConfig("localhost:8000", "m")


def test_explainer_refuses_examples_without_activity():
    with stub_llm.serve(stub_llm.fixed(REPLY)) as stub, pytest.raises(MechscopeError, match="no example"):
        LLMExplainer(config(stub.url)).explain(0, [Example((" a",), (0.0,))])
    assert stub.requests == []
