"""Format sniffing by the first bytes, over the test corpus."""

from __future__ import annotations

import pytest

from models.formats import sniff_format
from models.image_errors import CorruptImage, UnsupportedFormat
from tests.helpers import corpus


@pytest.mark.parametrize("item", corpus(), ids=lambda item: item.name)
def test_format_is_decided_by_the_bytes_not_the_name(item) -> None:
    head = item.path.read_bytes()[:32]
    if item.expected == "reject-unsupported":
        with pytest.raises(UnsupportedFormat) as raised:
            sniff_format(head)
        assert raised.value.message.startswith("unsupported format: ")
        expected_name = item.true_format.split()[0]
        assert raised.value.format_name.lower() == {"text": "text"}.get(expected_name, expected_name).lower()
    elif "damaged signature" in item.true_format or item.name == "empty.jpg":
        with pytest.raises(CorruptImage):
            sniff_format(head)
    else:
        assert sniff_format(head) == item.true_format.split()[0]
