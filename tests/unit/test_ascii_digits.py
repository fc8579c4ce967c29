"""Numbers in query strings and JSON keys: ASCII decimal digits only.

``str.isdigit`` admits superscripts and other scripts' digits that ``int`` refuses
(or reads), so each place that parses one refuses them as bad input, not a 500."""

from __future__ import annotations

import pytest

from portway.api.usage import _days
from portway.digits import ascii_decimal
from portway.errors import InvalidRequest
from portway.protocol.chat import ChatCompletionRequest
from portway.serving.chat_request import to_sampling

ODD_DIGITS = ["²", "\u0663", "\uff11", "1²", "", "-1", "+1", " 1", "1_0"]


@pytest.mark.parametrize("text", ODD_DIGITS)
def test_only_ascii_decimals_are_numbers(text: str) -> None:
    assert ascii_decimal(text) is None


def test_ascii_decimals_are_read_within_their_length() -> None:
    assert ascii_decimal("007") == 7
    assert ascii_decimal("1234", max_digits=4) == 1234
    assert ascii_decimal("12345", max_digits=4) is None


@pytest.mark.parametrize("text", ["²", "\u0663"])
def test_usage_days_refuse_other_digits(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        _days(text)
    assert refused.value.param == "days"


@pytest.mark.parametrize("key", ["²", "\u0663", "\uff11"])
def test_logit_bias_keys_refuse_other_digits(key: str) -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {key: 1}}
    )
    with pytest.raises(InvalidRequest) as refused:
        to_sampling(request)
    assert refused.value.param == "logit_bias"
