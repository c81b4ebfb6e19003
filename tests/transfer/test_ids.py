"""A transfer id in a URL is CLUSTER or CLUSTER.PROC in ASCII digits; anything else is a 404 naming ``id``."""

from __future__ import annotations

import pytest

from lark.transfer.model import TransferRequestError
from lark.transfer.service import parse_id


def test_ids_parse() -> None:
    assert parse_id("42") == (42, 0) and parse_id("42.3") == (42, 3)


@pytest.mark.parametrize("text", ["\u00b2", "4\u0663", "42.", ".1", "x", "-1", "1.2.3", "4" * 19, ""])
def test_anything_else_is_a_404_naming_the_id(text: str) -> None:
    with pytest.raises(TransferRequestError) as err:
        parse_id(text)
    assert err.value.status == 404 and err.value.field == "id"
