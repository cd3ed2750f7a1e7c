"""Personal-data patterns: what `semroute suggest` never copies into a route file."""

from __future__ import annotations

import pytest

from semroute.quality.pii import iban_ok, luhn_ok, personal_data


@pytest.mark.parametrize(("text", "kind"), [
    ("mail me at jane.doe+work@example.co.uk about the refund", "email"),
    ("clone https://bob:hunter2@git.example.com/repo.git", "url_credentials"),
    ("my card 4111 1111 1111 1111 was charged twice", "card_number"),
    ("card number 5500-0000-0000-0004 declined", "card_number"),
    ("send it to GB82 WEST 1234 5698 7654 32 please", "iban"),
    ("transfer to DE89370400440532013000", "iban"),
    ("my ssn is 078-05-1120", "national_id"),
    ("why can't I reach 192.168.1.20 from my laptop", "ip_address"),
    ("ping 2001:db8:85a3::8a2e:370:7334", "ip_address"),
    ("use the key sk-abcdefghijklmnop1234567890", "secret"),
    ("call me on +44 20 7946 0958 tomorrow", "phone"),
    ("my number is (555) 123-4567", "phone"),
    ("text 0049 30 1234567", "phone"),
])
def test_a_query_with_personal_data_is_flagged_with_its_kind(text: str, kind: str) -> None:
    assert kind in personal_data(text)


@pytest.mark.parametrize("text", [
    "write a regex that matches US phone numbers",
    "how do I reset my password",
    "what is 17 times 23",
    "the meeting is on 2024-03-15 at 10:30",
    "my order 12345 has not arrived",
    "version 1.2.3 of the library broke my build",
    "card 4111 1111 1111 1112 fails",  # 16 digits, but not a valid card number (Luhn)
    "explain the @decorator syntax in python",
    "GB82 is the start of the account code",
])
def test_ordinary_queries_are_not_flagged(text: str) -> None:
    assert personal_data(text) == []


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")
