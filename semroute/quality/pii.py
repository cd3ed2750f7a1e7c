"""Personal-data patterns a suggested utterance must never carry: e-mail addresses, phone
numbers, payment card numbers (Luhn-checked), IBANs (mod-97-checked), IP addresses, URLs with
credentials, national-id-like numbers and API secrets. A query that shows any of them is
counted, never copied into a route file.

The patterns lean towards flagging: a false alarm costs one suggestion, a miss copies
someone's data into a file many people read.
"""

from __future__ import annotations

import re
from collections.abc import Callable

EMAIL = re.compile(r"[\w.+%-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]+:[^\s/@]*@", re.I)
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                  r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]*\d)")
IPV6 = re.compile(r"(?<![\w:])(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|"
                  r"(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:?){0,6}[0-9a-f]{1,4})(?![\w:])",
                  re.I)
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().-]{6,18}\d(?!\d)")
SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
SECRET = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b|"
                    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abpr]-[A-Za-z0-9-]{10,}")
DATE_LIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")
PHONE_DIGITS = (9, 15)  # digits in a phone number, country code included


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN candidate (spaces ignored)."""
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _cards(text: str) -> bool:
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return True
    return False


def _ibans(text: str) -> bool:
    for m in IBAN.finditer(text.upper()):
        words = m.group().split(" ")  # the match may run into the next words: try shorter
        if any(iban_ok("".join(words[:j])) for j in range(len(words), 0, -1)):
            return True
    return False


def _phones(text: str) -> bool:
    for m in PHONE.finditer(text):
        raw = m.group().strip()
        digits = re.sub(r"\D", "", raw)
        if not PHONE_DIGITS[0] <= len(digits) <= PHONE_DIGITS[1] or DATE_LIKE.match(raw):
            continue
        if raw.startswith(("+", "00")) or re.search(r"[ ().-]", raw) or len(digits) >= 10:
            return True
    return False


CHECKS: dict[str, Callable[[str], bool]] = {
    "email": lambda t: EMAIL.search(t) is not None,
    "url_credentials": lambda t: URL_CREDENTIALS.search(t) is not None,
    "card_number": _cards,
    "iban": _ibans,
    "national_id": lambda t: SSN.search(t) is not None,
    "ip_address": lambda t: IPV4.search(t) is not None or IPV6.search(t) is not None,
    "secret": lambda t: SECRET.search(t) is not None,
    "phone": _phones,
}


def personal_data(text: str) -> list[str]:
    """The kinds of personal data `text` appears to contain (empty: none found)."""
    return [kind for kind, check in CHECKS.items() if check(text)]
