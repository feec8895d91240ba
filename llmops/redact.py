"""PII and secret redaction, applied to every string before it is persisted or traced.

`Redactor(mode, salt, extra).text(s)` replaces what it finds with a placeholder:

- ``mask`` (default): ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[IP]``,
  ``[NATIONAL_ID]``, ``[SECRET]``, and ``[<NAME>]`` for an extra pattern (name upper-cased,
  other characters than letters and digits turned into ``_``).
- ``hash``: ``[EMAIL:3f9a1c2b7d]``, the kind and the first 10 hex digits of
  HMAC-SHA256(salt, kind + normalized value). Stable across calls and processes for one salt,
  so repeats can still be counted; without a secret salt low-entropy values (phone numbers,
  cards) can be recovered by brute force, so set one.
- ``off``: the input, unchanged (the same object).

`Redactor.value()` does the same for every string inside a JSON value (dicts, lists; dict
keys are kept), returning new containers. A string stored under a credential-like key
(``password``, ``api_key``, ``client_secret``, ``access_token``, ``authorization`` ... see
`_SECRET_KEY`) is replaced as a whole by ``[SECRET]``.

What is detected, in this order (an earlier kind wins where matches overlap; a later match
overlapping an earlier one is dropped, so output is never garbled):

SECRET
    PEM private-key blocks (``-----BEGIN [RSA|EC|OPENSSH|ENCRYPTED|PGP ...] PRIVATE KEY-----``
    to the matching END line; without an END line, the base64 body that follows); JWTs
    (``eyJ...`` . ``eyJ...`` . signature); OpenAI/Anthropic-style keys ``sk-...``
    (``sk-proj-``, ``sk-svcacct-``, ``sk-ant-``; 20+ characters after ``sk-`` with a digit or
    an upper-case letter); AWS access key ids (``AKIA``/``ASIA`` + 16); GitHub tokens
    (``ghp_``, ``gho_``, ``ghs_``, ``ghu_``, ``ghr_``, ``github_pat_``); Stripe secret keys
    (``sk_live_``, ``rk_test_`` ...); Google API keys (``AIza`` + 35); Slack tokens
    (``xoxb-`` ...); the password of a URL (``scheme://user:PASSWORD@host``);
    ``Bearer <token>`` and ``Basic <base64>`` (token only; English words are left alone);
    URL/SAS query values (``sig=`` anywhere; ``signature=``, ``token=``, ``key=``,
    ``X-Amz-Signature=``, ``X-Amz-Security-Token=``, ``X-Goog-Signature=`` after ``?``, ``&``
    or ``;``) that look opaque (8+ characters with a digit, a symbol or inner capitals, or
    24+); and the value of an assignment ``<key>=value``, ``<key>: value``,
    ``"<key>": "value"``, ``--<key> value`` where the key (any case, preceded by no letter or
    digit, so ``DB_PASSWORD`` and ``x-api-key`` count) ends in api/access/secret/private/
    account/subscription key, apikey, shared access key (so Azure ``AccountKey=``,
    ``SharedAccessKey=``, ``Ocp-Apim-Subscription-Key:``), api/client secret, secret, passwd,
    password, passphrase, or access/refresh/auth/id/api/session/bearer token (the words
    joined by ``_``, ``-``, a space or nothing).
    Only the value is replaced (``password=[SECRET]``). Values that are clearly code or
    placeholders (``None``, ``api_key=api_key``, ``settings.api_key``, ``os.getenv(...)``,
    ``${VAR}``, ``<your-key>``, ``****``) are kept; after a plain-word key and ``:`` (prose:
    "Password: click the link") the value must look secret (a digit, a symbol, inner capitals,
    or 16+ characters). Values end at whitespace, quotes, ``,;&`` and brackets.
EMAIL
    ``local@domain.tld`` (Unicode letters allowed; not ``icon@2x.png``).
IBAN
    Upper-case country code + 2 check digits + BBAN, compact or in groups of 4 separated by
    single spaces; the length must be that of the country (ISO 13616 registry, 89 countries)
    and the mod-97 check must pass.
CARD
    13-19 digits, first digit 2-6 (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
    Maestro), Luhn-valid; compact, or groups separated by one kind of separator (single space
    or dash) with a first group of 4 and other groups of 3-6 digits (4-4-4-4, 4-6-5, 4-6-4,
    4-4-4-4-3).
NATIONAL_ID
    US SSN ``123-45-6789`` / ``123 45 6789`` (not area 000, 666 or 900-999, group 00, serial
    0000); UK National Insurance number ``AB123456C`` / ``AB 12 34 56 C`` (HMRC prefix rules:
    first letter not D F I Q U V, second not D F I O Q U V, not BG GB KN NK NT TN ZZ; suffix
    A-D required; upper case); Spanish DNI ``12345678Z`` and NIE ``X1234567L`` (check letter
    verified).
IP
    IPv6 (validated by `ipaddress`; at least one digit and two non-empty groups, so ``::1``,
    ``dead::beef``, MAC addresses and ``12:30:45`` are left alone) and dotted-quad IPv4
    (octets 0-255 without leading zeros; not after "version", "v", "release", "build" or a
    product name and ``/`` as in ``Chrome/120.0.0.0``).
PHONE
    8-15 digits in one of: ``+`` country code with separated groups (``+1 (415) 555-2671``,
    ``+44 20 7946 0958``, ``+44 (0)20 7946 0958``, ``+33 6 12 34 56 78``, ``+49 30 901820``)
    or compact E.164 (``+14155552671``); ``(415) 555-2671``; North American ``415-555-2671``,
    ``415.555.2671``, ``1-800-555-0199`` (one separator kind, NANP area/exchange rules); French
    ``06 12 34 56 78`` (spaces, dots or dashes); trunk-0 national numbers with groups of 3+
    digits (``020 7946 0958``, ``030 901820``, ``07700 900123``; at least 9 digits); ``00`` +
    country code (``0049 30 901820``). Digits glued to letters, dots or dashes (order
    numbers, versions, UUIDs) never start or end one; trailing groups that would take a ``+``,
    ``00`` or trunk-0 number past 15 digits are left out (``+49 30 901820 2026``).
extra patterns
    Last, from settings (`parse_extra_patterns`); a named group ``value`` limits the
    replacement to that group.

Placeholders already in the text are kept as they are, and a text is redacted again until
nothing new is found (replacing a match can expose a neighbour that was glued to it), so
redaction is idempotent. Numeric kinds use ASCII digits only. Everything is compiled once at
import; cheap substring tests on the text, its lower-cased form and its "shape" (digits as
``0``, capitals as ``A``) skip the patterns that cannot match, so a typical chat message with
nothing to redact costs a few microseconds. `Redactor` holds no mutable state and does no I/O.

Known limits: not found are credentials in prose without a key word (``my password is
hunter2``), key words in other languages (``mot de passe: ...``), lower-case IBANs and
national formats not listed above; a 13-19 digit number that happens to pass Luhn (1 in 10)
and starts with 2-6 is masked as a card.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

__all__ = ["KINDS", "RedactMode", "Redactor", "parse_extra_patterns"]

RedactMode = Literal["mask", "hash", "off"]

EMAIL: Final = "EMAIL"
PHONE: Final = "PHONE"
CARD: Final = "CARD"
IBAN: Final = "IBAN"
IP: Final = "IP"
NATIONAL_ID: Final = "NATIONAL_ID"
SECRET: Final = "SECRET"
KINDS: Final[tuple[str, ...]] = (EMAIL, PHONE, CARD, IBAN, IP, NATIONAL_ID, SECRET)

_MODES: Final = ("mask", "hash", "off")
_HASH_CHARS: Final = 10
# A pass can only create new matches at the edges of the placeholders it wrote (a digit next
# to a card number stops being next to a digit); a few passes reach the fixed point.
_MAX_PASSES: Final = 4

# (start, end, normalized value) of one finding, or None when a candidate is rejected.
_Hit = tuple[int, int, str] | None
# Checks get the match and the original text (a pattern may run on the lower-cased text).
_Check = Callable[[re.Match[str], str], _Hit]


class _Detector(NamedTuple):
    kind: str
    pattern: re.Pattern[str]
    check: _Check
    # Cheap necessary conditions, tested in this order before the pattern runs:
    min_digits: int = 0  # with `shapes`: the text holds at least this many ASCII digits
    shapes: tuple[str, ...] = ()  # one occurs in the text's shape (see `_shape`)
    needles: tuple[str, ...] = ()  # one occurs in the text (lower-cased if `lower`)
    lower: bool = False  # needles, trigger and pattern see the text lower-cased (ASCII)
    trigger: re.Pattern[str] | None = None  # found in the text
    shape_trigger: re.Pattern[str] | None = None  # found in the shape


# The shape of a text: ASCII digits become 0, ASCII capitals A, non-ASCII characters ?;
# `"0000 000" in shape` asks "four digits, a space, three digits?" at the cost of `in`.
_SHAPE_TABLE: Final = bytes.maketrans(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26
)


def _shape(text: str) -> str:
    return text.encode("ascii", "replace").translate(_SHAPE_TABLE).decode("ascii")


def _whole(normalize: Callable[[str], str] = str) -> _Check:
    def check(match: re.Match[str], text: str) -> _Hit:
        return match.start(), match.end(), normalize(text[match.start() : match.end()])

    return check


def _not_after(chars: str, check: _Check) -> _Check:
    """`check`, for matches whose preceding character is not one of `chars` or a letter/digit."""

    def bounded(match: re.Match[str], text: str) -> _Hit:
        start = match.start()
        if start:
            before = text[start - 1]
            if before in chars or (before.isascii() and before.isalnum()):
                return None
        return check(match, text)

    return bounded


def _digits(value: str) -> str:
    return "".join(c for c in value if "0" <= c <= "9")


# --- Secrets --------------------------------------------------------------------------------

_PEM_LABEL = r"[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
# To the END line (within 16 KiB, not past another BEGIN), else over the base64 body that
# follows (a truncated block). Linear even for a text of many BEGIN lines.
_PEM = re.compile(
    rf"-----BEGIN{_PEM_LABEL}(?:(?:(?!-----BEGIN)[\s\S]){{0,16384}}?-----END{_PEM_LABEL}"
    r"|[A-Za-z0-9+/=\s:,\\-]*)"
)


_JWT = re.compile(r"eyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*", re.ASCII)
_TOKEN = re.compile(
    r"sk-[\w-]{20,}"
    r"|AKIA[0-9A-Z]{16}(?![0-9A-Za-z])"
    r"|ASIA[0-9A-Z]{16}(?![0-9A-Za-z])"
    r"|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_\w{22,}"
    r"|sk_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|rk_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|AIza[\w-]{35}(?![\w-])"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}",
    re.ASCII,
)
_SK_BODY_HINT = re.compile(r"[0-9A-Z]")


def _check_token(match: re.Match[str], text: str) -> _Hit:
    token = match.group()
    if token.startswith("sk-") and not _SK_BODY_HINT.search(token, 3):
        return None  # sk-this-is-a-long-hyphenated-slug
    return match.start(), match.end(), token


_URL_PASSWORD = re.compile(r"://[^\s/:@]*:(?P<v>[^\s/@]+)@", re.ASCII)
# Runs on the lower-cased text, as do `_URL_PARAM` and `_ASSIGNMENT`.
_AUTH = re.compile(
    r"\b(?:bearer\s+(?P<bearer>[\w\-.~+/]+=*)|basic\s+(?P<basic>[A-Za-z0-9+/]+={0,2}))",
    re.ASCII,
)
# Something in a token that an English word does not have: a digit, a symbol, inner capitals.
_OPAQUE_HINT = re.compile(r"[0-9_\-.~+/=]|.[A-Z]", re.ASCII)


def _opaque(token: str) -> bool:
    return len(token) >= 24 or (len(token) >= 8 and _OPAQUE_HINT.search(token) is not None)


def _check_auth(match: re.Match[str], text: str) -> _Hit:
    name = "bearer" if match.group("bearer") is not None else "basic"
    start, end = match.span(name)
    token = text[start:end].rstrip("./")
    return (start, start + len(token), token) if _opaque(token) else None


_URL_PARAM = re.compile(
    r"(?P<name>sig|signature|token|key|x-amz-signature|x-amz-security-token|x-goog-signature)"
    r"=(?P<v>[^&\s#\"'<>;]+)",
    re.ASCII,
)


def _check_url_param(match: re.Match[str], text: str) -> _Hit:
    # A query parameter (after ? & or ;), or sig= anywhere (SAS tokens, connection strings).
    before = text[match.start() - 1 : match.start()]
    if before not in ("?", "&", ";") and (
        match.group("name") != "sig" or before.isalnum() or before in ("_", "-")
    ):
        return None
    start, end = match.span("v")
    value = text[start:end]
    return (start, end, value) if _opaque(value) else None


def _check_value_group(match: re.Match[str], text: str) -> _Hit:
    start, end = match.span("v")
    return start, end, text[start:end]


# Key names whose value is a credential; lower case, every branch starting with a literal.
_KEY_WORD_LIST = (
    *(f"{w}[_ -]?key" for w in ("api", "access", "secret", "private", "account", "subscription")),
    "apikey",
    "shared[_ -]?access[_ -]?key",
    "api[_ -]?secret",
    "client[_ -]?secret",
    "secret",
    "passwd",
    "password",
    "passphrase",
    *(f"{w}[_ -]?token" for w in ("access", "refresh", "auth", "id", "api", "session", "bearer")),
)
_KEY_WORDS = "(?:" + "|".join(_KEY_WORD_LIST) + ")"
# Runs on the lower-cased text (fast: a case-sensitive scan with a literal first character).
_ASSIGNMENT = re.compile(
    rf"(?P<key>{'|'.join(_KEY_WORD_LIST)})(?P<kq>[\"']?)"
    r"(?P<sep>[ \t]{0,3}(?:=>|[:=])[ \t]{0,3}|[ \t]+)"
    r"(?:\"(?P<dq>[^\"\n]{1,512})\"|'(?P<sq>[^'\n]{1,512})'"
    r"|(?P<bare>[^\s\"'`,;&<>(){}\[\]]{1,512}))",
    re.ASCII,
)
_ASSIGNMENT_TRIGGER = re.compile(
    "|".join(
        rf"{word}[\"']?[ \t]{{0,3}}[:=]"
        for word in ("key", "secret", "passwd", "password", "passphrase", "token")
    )
    + r"|--[\w-]*(?:key|secret|passwd|password|passphrase|token)[ \t=]",
    re.ASCII,
)
# Credential-like dict keys: `value()` replaces a string stored under one as a whole.
_SECRET_KEY = re.compile(
    rf"(?:[\w.-]*[_.-])?(?:{_KEY_WORDS}|authorization|cookie|set[_-]cookie"
    r"|connection[_-]?string|credentials?)",
    re.ASCII | re.IGNORECASE,
)
_CODE_REFERENCE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", re.ASCII)
_NOT_VALUES = frozenset({"none", "null", "nil", "true", "false", "undefined", "empty"})
_TEMPLATE = re.compile(r"\$\{|\{\{|%\(|<|#\{|=|\$[A-Z_][A-Z0-9_]*$|%[A-Za-z_]\w*%$", re.ASCII)


def _check_assignment(match: re.Match[str], text: str) -> _Hit:
    key = text[match.start("key") : match.end("key")]
    sep = match.group("sep")
    if not sep.strip():  # whitespace separates only after --password, and not another flag
        if text[max(0, match.start() - 2) : match.start()] != "--":
            return None  # `password reset`
        if (match.group("bare") or "").startswith("-"):
            return None  # `--password --verbose`
    for group in ("dq", "sq"):
        if match.group(group) is not None:
            start, end = match.span(group)
            quoted = text[start:end]
            if not quoted.strip() or _masked_or_template(quoted):
                return None
            return start, end, quoted
    start, end = match.span("bare")
    value = text[start:end].rstrip(".,:")
    end = start + len(value)
    if not value or _masked_or_template(value):
        return None
    if text[end : end + 1] in ("(", "[") or _CODE_REFERENCE.fullmatch(value):
        return None  # os.getenv("KEY"), settings.api_key, kwargs["password"]
    lowered = value.lower()
    if lowered in _NOT_VALUES or lowered == key.lower():
        return None  # api_key=None, password=password
    plain_key = key.replace(" ", "").isalpha() and not key.isupper() and not match.group("kq")
    if plain_key and ":" in sep and not _secret_like(value):
        return None  # prose: "Password: click the link"
    return start, end, value


def _masked_or_template(value: str) -> bool:
    return _TEMPLATE.match(value) is not None or not value.strip("*•xX.#-_ ")


def _secret_like(value: str) -> bool:
    return len(value) >= 16 or (len(value) >= 4 and _OPAQUE_HINT.search(value) is not None)


# --- E-mail ---------------------------------------------------------------------------------

# From the `@` (a fast literal scan); the local part is found by walking back from it.
_EMAIL_DOMAIN = re.compile(r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-]|\.[^\W_])")
_RETINA = re.compile(r"@\d+(?:\.\d+)?x\.", re.ASCII)
_LOCAL_SYMBOLS = "._%+-"


def _check_email(match: re.Match[str], text: str) -> _Hit:
    at = match.start()
    start = at
    while start > 0 and at - start <= 64:
        char = text[start - 1]
        if not (char.isalnum() or char in _LOCAL_SYMBOLS):
            break
        start -= 1
    if start == at or at - start > 64 or _RETINA.match(match.group()):
        return None  # no local part, a local part too long, icon@2x.png
    return start, match.end(), text[start : match.end()].lower()


# --- IBAN -----------------------------------------------------------------------------------

# ISO 13616 registry: country -> IBAN length.
_IBAN_LENGTHS: Final[Mapping[str, int]] = MappingProxyType(
    {
        entry[:2]: int(entry[2:])
        for entry in (
            "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
            "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 "
            "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 "
            "MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 "
            "RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 "
            "VA22 VG24 XK20 YE30 "
        ).split()
    }
)
_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)


def _end_of_nth_alnum(text: str, n: int) -> int | None:
    seen = 0
    for index, char in enumerate(text):
        if char != " ":
            seen += 1
            if seen == n:
                return index + 1
    return None


def _check_iban(match: re.Match[str], text: str) -> _Hit:
    candidate = match.group()
    length = _IBAN_LENGTHS.get(candidate[:2])
    if length is None:
        return None
    end = _end_of_nth_alnum(candidate, length)
    if end is None or candidate[end : end + 1] not in ("", " "):
        return None  # too short, or the registry length ends inside a group
    compact = candidate[:end].replace(" ", "")
    rotated = compact[4:] + compact[:4]
    if int("".join(str(int(c, 36)) for c in rotated)) % 97 != 1:
        return None
    return match.start(), match.start() + end, compact


# --- Payment cards --------------------------------------------------------------------------

_CARD = re.compile(r"\d(?<![\w.,+-]\d)(?:[ -]?\d){12,18}(?!\w|[.,-]\d)", re.ASCII)


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_ok(candidate: str) -> bool:
    digits = _digits(candidate)
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456" or not _luhn(digits):
        return False
    separators = {c for c in candidate if c in " -"}
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = [len(g) for g in candidate.split(separators.pop())]
    return groups[0] == 4 and all(3 <= g <= 6 for g in groups[1:])


def _check_card(match: re.Match[str], text: str) -> _Hit:
    candidate = match.group()
    # A date or count may follow a card number ("4111 1111 1111 1111 12/26"): try the whole
    # run, then without its trailing groups.
    end = len(candidate)
    while end > 0:
        if _card_ok(candidate[:end]):
            return match.start(), match.start() + end, _digits(candidate[:end])
        end = max(candidate.rfind(" ", 0, end), candidate.rfind("-", 0, end))
    return None


# --- National ids ---------------------------------------------------------------------------

# US SSN, one separator kind; area 000/666/9xx, group 00 and serial 0000 are never issued.
_SSN = re.compile(r"\d(?<![\w.,/+-]\d)\d\d(?P<s>[ -])\d\d(?P=s)\d{4}(?!\w|[.,-]\d)", re.ASCII)


def _check_ssn(match: re.Match[str], text: str) -> _Hit:
    value = match.group()
    area, group, serial = value[:3], value[4:6], value[7:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return match.start(), match.end(), area + group + serial


# UK National Insurance number: first letter not D F I Q U V, second not D F I O Q U V,
# prefixes BG GB KN NK NT TN ZZ unallocated; suffix A-D; spaced as AB 12 34 56 C or not at all.
_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9].)[A-CEGHJ-NPR-TW-Z]"
    r"(?:\d{6}|(?P<sp> )\d\d \d\d \d\d)(?(sp) )[A-D](?![A-Za-z0-9])"
)
_NINO_UNALLOCATED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _check_nino(match: re.Match[str], text: str) -> _Hit:
    value = match.group()
    if value[:2] in _NINO_UNALLOCATED:
        return None
    return match.start(), match.end(), value.replace(" ", "")


# Spanish DNI (8 digits) and NIE (X, Y or Z + 7 digits) with their mod-23 check letter.
_DNI = re.compile(r"[0-9XYZ](?<![\w-].)\d{7}-?[A-Z](?![A-Za-z0-9])", re.ASCII)
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _check_dni(match: re.Match[str], text: str) -> _Hit:
    compact = match.group().replace("-", "")
    number = int(
        str("XYZ".index(compact[0])) + compact[1:8] if compact[0] in "XYZ" else compact[:8]
    )
    if _DNI_LETTERS[number % 23] != compact[8]:
        return None
    return match.start(), match.end(), compact


# --- IP addresses ---------------------------------------------------------------------------

_IPV6 = re.compile(r"[0-9A-Fa-f:](?<![\w:.].)[0-9A-Fa-f:.]{1,44}(?![\w:])", re.ASCII)


def _check_ipv6(match: re.Match[str], text: str) -> _Hit:
    candidate = match.group().rstrip(".")
    if candidate.count(":") < 2 or not any("0" <= c <= "9" for c in candidate):
        return None  # dead::beef, a::b
    if sum(1 for group in candidate.split(":") if group) < 2:
        return None  # ::1, ::
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        if not candidate.endswith(":") or candidate.endswith("::"):
            return None  # 12:30:45, MAC addresses
        candidate = candidate[:-1]  # "2001:db8::1: unreachable"
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:
            return None
    return match.start(), match.start() + len(candidate), address.compressed


_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)", re.ASCII)
_VERSION_BEFORE = re.compile(
    r"\b(?:versions?|ver|v|release|build|firmware)[\s:=.]{0,3}$", re.ASCII | re.IGNORECASE
)


def _check_ipv4(match: re.Match[str], text: str) -> _Hit:
    value = match.group()
    for octet in value.split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None  # 999.1.1.1, 01.02.03.04
    start = match.start()
    if _VERSION_BEFORE.search(text[max(0, start - 16) : start]):
        return None  # "version 1.2.3.4"
    if text[start - 1 : start] == "/" and text[start - 2 : start - 1].isalpha():
        return None  # a product version in a user agent: Chrome/120.0.0.0
    return start, match.end(), value


# --- Phone numbers --------------------------------------------------------------------------

_PHONE_END = r"(?!\w|[.-]\d)"
# + country code, then groups (the first may be an area code in brackets), or compact E.164.
_PHONE_PLUS = re.compile(
    r"\+(?<![\w+./-]\+)(?:\d{1,3}(?:[ .-]?\(\d{1,4}\)[ .-]?|[ .-])\d{1,5}(?:[ .-]\d{2,6}){0,5}"
    rf"|\d{{8,15}}){_PHONE_END}",
    re.ASCII,
)
_PHONE_BRACKETS = re.compile(
    rf"\((?<![\w+./-]\()\d{{2,5}}\)[ .-]?\d{{2,5}}(?:[ .-]\d{{2,5}}){{1,3}}{_PHONE_END}",
    re.ASCII,
)
# North American: area and exchange start with 2-9; optional leading 1; one separator kind.
_PHONE_NANP = re.compile(
    r"[1-9](?<![\w+./-].)(?:(?<=1)[ .-][2-9]\d\d|(?<=[2-9])\d\d)"
    rf"(?P<n>[.-])[2-9]\d\d(?P=n)\d{{4}}{_PHONE_END}",
    re.ASCII,
)
_PHONE_FR = re.compile(
    rf"0(?<![\w+./-]0)[1-9](?P<f>[ .-])\d\d(?:(?P=f)\d\d){{3}}{_PHONE_END}", re.ASCII
)
# Trunk prefix 0 + area code, then groups of 3+ digits: 020 7946 0958, 030 901820;
# or 00 + country code, then groups, the first not starting with 0: 0049 30 901820.
_PHONE_TRUNK = re.compile(
    r"0(?<![\w+./-]0)(?:0[1-9]\d{0,2}[ .-][1-9]\d{0,5}(?:[ .-]\d{1,6}){1,5}"
    r"|[1-9]\d{0,3}(?:[ -]\d{3,8}){1,3})" + _PHONE_END,
    re.ASCII,
)


def _phone(minimum: int, trim: bool = False) -> _Check:
    def check(match: re.Match[str], text: str) -> _Hit:
        candidate = match.group()
        end = len(candidate)
        while True:
            if minimum <= len(_digits(candidate[:end])) <= 15:
                return match.start(), match.start() + end, _digits(candidate[:end])
            if not trim:
                return None
            # "+44 20 7946 0958 2026-11-22": drop trailing space-separated groups.
            end = candidate.rfind(" ", 0, end)
            if end <= 0:
                return None

    return check


# --- The detectors, in priority order -------------------------------------------------------

_TEXTUAL: Final[tuple[_Detector, ...]] = (
    _Detector(SECRET, _PEM, _whole(lambda v: "".join(v.split())), needles=("-----BEGIN",)),
    _Detector(SECRET, _JWT, _not_after("-_", _whole()), needles=("eyJ",)),
    _Detector(
        SECRET,
        _TOKEN,
        _not_after("-_", _check_token),
        needles=("sk-", "AKIA", "ASIA", "_", "AIza", "xox"),
    ),
    _Detector(SECRET, _URL_PASSWORD, _check_value_group, needles=("://",)),
    _Detector(SECRET, _AUTH, _check_auth, needles=("bearer", "basic"), lower=True),
    _Detector(
        SECRET,
        _URL_PARAM,
        _check_url_param,
        needles=("sig", "token=", "key="),
        lower=True,
    ),
    _Detector(
        SECRET,
        _ASSIGNMENT,
        _not_after("", _check_assignment),
        needles=("key", "secret", "pass", "token"),
        lower=True,
        trigger=_ASSIGNMENT_TRIGGER,
    ),
    _Detector(EMAIL, _EMAIL_DOMAIN, _check_email, needles=("@",)),
)
# Kinds made of digits: skipped at once when the text has no digit.
_NUMERIC: Final[tuple[_Detector, ...]] = (
    _Detector(IBAN, _IBAN, _check_iban, min_digits=4, shapes=("AA00",)),
    _Detector(CARD, _CARD, _check_card, min_digits=13, shapes=("0000000", "0000 000", "0000-000")),
    _Detector(NATIONAL_ID, _SSN, _check_ssn, min_digits=9, shapes=("000-00-0000", "000 00 0000")),
    _Detector(NATIONAL_ID, _NINO, _check_nino, min_digits=6, shapes=("AA000000A", "AA 00 00 00 A")),
    _Detector(
        NATIONAL_ID,
        _DNI,
        _check_dni,
        min_digits=7,
        shapes=("0000000A", "0000000-A"),
    ),
    _Detector(
        IP,
        _IPV6,
        _check_ipv6,
        min_digits=1,
        shapes=(":",),
        trigger=re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"),
    ),
    _Detector(
        IP,
        _IPV4,
        _check_ipv4,
        min_digits=4,
        shapes=(".0",),
        shape_trigger=re.compile(r"\.0{1,3}\.0{1,3}\."),  # the two middle octets
    ),
    _Detector(PHONE, _PHONE_PLUS, _phone(8, trim=True), min_digits=8, shapes=("+0",)),
    _Detector(PHONE, _PHONE_BRACKETS, _phone(8), min_digits=8, shapes=("(00",)),
    _Detector(
        PHONE,
        _PHONE_NANP,
        _phone(10),
        min_digits=10,
        shapes=("000-000-0000", "000.000.0000"),
    ),
    _Detector(
        PHONE,
        _PHONE_FR,
        _phone(10),
        min_digits=10,
        shapes=("00 00 00 00 00", "00.00.00.00.00", "00-00-00-00-00"),
    ),
    _Detector(
        PHONE, _PHONE_TRUNK, _phone(9, trim=True), min_digits=9, shapes=("0 00", "0-00", "0.00")
    ),
)


def _placeholders(kinds: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(kind) for kind in sorted(set(kinds), key=len, reverse=True))
    return re.compile(rf"\[(?:{names})(?::[0-9a-f]{{{_HASH_CHARS}}})?\]")


_BUILTIN_PLACEHOLDERS: Final = _placeholders(KINDS)
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# --- Extra patterns -------------------------------------------------------------------------


def _kind_name(name: str) -> str:
    kind = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").upper()
    if not kind:
        raise ValueError(f"extra redaction pattern name {name!r} has no letters or digits")
    return kind


def _compile_extra(name: str, pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"extra redaction pattern {name!r} ({pattern!r}) is not a valid regular "
            f"expression: {exc}"
        ) from None
    if compiled.fullmatch(""):
        raise ValueError(f"extra redaction pattern {name!r} ({pattern!r}) matches empty text")
    return compiled


def _check_extra(match: re.Match[str], text: str) -> _Hit:
    group = "value" if "value" in match.re.groupindex else 0
    start, end = match.span(group)
    if start < 0 or start == end:
        return None
    return start, end, match.group(group)


def parse_extra_patterns(raw: str) -> dict[str, str]:
    """Parse the extra-patterns setting: a JSON object of name -> regular expression.

    ``'{"ticket": "TICKET-\\\\d+"}'`` gives ``{"ticket": "TICKET-\\d+"}``, redacted as
    ``[TICKET]``. Blank text means no extra patterns. Raises `ValueError` naming the pattern
    when the JSON is not an object of strings or a regex does not compile or matches empty
    text.
    """
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"extra redaction patterns are not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            "extra redaction patterns must be a JSON object of name -> regular expression, "
            f"not a JSON {type(data).__name__}"
        )
    patterns: dict[str, str] = {}
    for name, pattern in data.items():
        if not isinstance(pattern, str):
            raise ValueError(
                f"extra redaction pattern {name!r} must be a string, "
                f"not a JSON {type(pattern).__name__}"
            )
        _kind_name(name)
        _compile_extra(name, pattern)
        patterns[name] = pattern
    return patterns


# --- The redactor ---------------------------------------------------------------------------


_SHORT = 40  # characters: strings up to this long have their redaction remembered
_SHORT_ENTRIES = 4096


@dataclass(frozen=True)
class Redactor:
    """Finds PII and secrets in text and replaces them (see the module docstring).

    ``mode``: ``mask``, ``hash`` or ``off``; ``salt``: the HMAC key for ``hash``; ``extra``:
    name -> regex, applied after the built-in kinds. Raises `ValueError` for an unknown mode
    or a bad extra pattern. Thread-safe: an instance is immutable.
    """

    mode: RedactMode = "mask"
    salt: bytes = field(default=b"", repr=False)
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The detectors to run on a text with digits, and on one without.
    _detectors: tuple[_Detector, ...] = field(
        init=False, repr=False, compare=False, hash=False, default=_TEXTUAL + _NUMERIC
    )
    _detectors_no_digits: tuple[_Detector, ...] = field(
        init=False, repr=False, compare=False, hash=False, default=_TEXTUAL
    )
    _protected: re.Pattern[str] = field(
        init=False, repr=False, compare=False, hash=False, default=_BUILTIN_PLACEHOLDERS
    )
    # Short strings recur on every record (roles, model and tool names, finish reasons):
    # their redaction is remembered. Bounded; a pure function of the text, so safe to share.
    _short: dict[str, str] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"redaction mode {self.mode!r} is not one of mask, hash, off")
        extra = MappingProxyType(dict(self.extra))
        object.__setattr__(self, "extra", extra)
        if extra:
            detectors = tuple(
                _Detector(_kind_name(name), _compile_extra(name, pattern), _check_extra)
                for name, pattern in extra.items()
            )
            object.__setattr__(self, "_detectors", _TEXTUAL + _NUMERIC + detectors)
            object.__setattr__(self, "_detectors_no_digits", _TEXTUAL + detectors)
            kinds = KINDS + tuple(d.kind for d in detectors)
            object.__setattr__(self, "_protected", _placeholders(kinds))

    def text(self, value: str) -> str:
        """`value` with every finding replaced by its placeholder."""
        if self.mode == "off":
            return value
        return self._redact(value, None)

    def text_with_counts(self, value: str) -> tuple[str, Counter[str]]:
        """Like `text`, and how many findings of each kind (``EMAIL``, ``TICKET`` ...)."""
        counts: Counter[str] = Counter()
        if self.mode == "off":
            return value, counts
        return self._redact(value, counts), counts

    def value(self, value: object) -> object:
        """A copy of a JSON value with every string redacted; dict keys are kept.

        Dicts, lists and tuples are copied (the input is never changed); a string under a
        credential-like key (``password``, ``api_key`` ...) becomes ``[SECRET]`` as a whole;
        other values are returned as they are.
        """
        if self.mode == "off":
            return value
        return self._walk(value, None)

    def value_with_counts(self, value: object) -> tuple[object, Counter[str]]:
        """Like `value`, and how many findings of each kind."""
        counts: Counter[str] = Counter()
        if self.mode == "off":
            return value, counts
        return self._walk(value, counts), counts

    # --- internals ---

    def _walk(self, root: object, counts: Counter[str] | None) -> object:
        # The usual shapes first (a list of flat dicts: messages, choices; a flat dict:
        # parameters), two levels with comprehensions; anything nested deeper goes to the
        # iterative walk, so deep JSON still cannot exhaust the stack.
        if type(root) is list:
            return [
                self._walk_dict(item, counts)
                if type(item) is dict
                else self._walk_deep(item, counts)
                for item in root
            ]
        if type(root) is dict:
            return self._walk_dict(root, counts)
        return self._walk_deep(root, counts)

    def _walk_dict(self, source: dict[object, object], counts: Counter[str] | None) -> object:
        copied: dict[object, object] = {}
        short = self._short if counts is None else None
        for key, item in source.items():
            if isinstance(item, str):
                secret = _SECRET_KEYS.get(key) if type(key) is str else None
                if secret is None:
                    secret = _is_secret_key(key)
                if secret and item.strip():
                    item = self._whole_secret(item, counts)
                elif short is not None and (known := short.get(item)) is not None:
                    item = known  # a short string seen before (roles, names, short replies)
                else:
                    item = self._redact(item, counts)
            elif isinstance(item, _CONTAINERS):
                item = self._walk_deep(item, counts)
            copied[key] = item
        return copied

    def _walk_deep(self, root: object, counts: Counter[str] | None) -> object:
        # Iterative and post-order, so deeply nested JSON cannot exhaust the stack.
        if not isinstance(root, _CONTAINERS):
            return self._redact(root, counts) if isinstance(root, str) else root
        # Each frame: the container, an iterator over its (key, item) pairs, the copies so far.
        stack: list[tuple[_Container, Iterator[tuple[object, object]], list[_Pair]]]
        stack = [(root, _pairs(root), [])]
        keys: list[object] = []  # the key, in its parent, of each frame but the root
        while True:
            source, pairs, copied = stack[-1]
            for key, item in pairs:
                if isinstance(item, _CONTAINERS):
                    keys.append(key)
                    stack.append((item, _pairs(item), []))
                    break
                if isinstance(item, str):
                    if isinstance(source, dict) and _is_secret_key(key) and item.strip():
                        item = self._whole_secret(item, counts)
                    else:
                        item = self._redact(item, counts)
                copied.append((key, item))
            else:
                stack.pop()
                built = _rebuild(source, copied)
                if not stack:
                    return built
                stack[-1][2].append((keys.pop(), built))

    def _whole_secret(self, value: str, counts: Counter[str] | None) -> str:
        if self._protected.fullmatch(value):
            return value
        if counts is not None:
            counts[SECRET] += 1
        return self._placeholder(SECRET, value)

    def _redact(self, text: str, counts: Counter[str] | None) -> str:
        if counts is None and len(text) <= _SHORT:
            known = self._short.get(text)
            if known is None:
                known = self._redact_all(text, None)
                if len(self._short) < _SHORT_ENTRIES:
                    self._short[text] = known
            return known
        return self._redact_all(text, counts)

    def _redact_all(self, text: str, counts: Counter[str] | None) -> str:
        for _ in range(_MAX_PASSES):
            spans = self._find(text)
            if not spans:
                break
            parts: list[str] = []
            position = 0
            for start, end, kind, normalized in spans:
                parts.append(text[position:start])
                parts.append(self._placeholder(kind, normalized))
                if counts is not None:
                    counts[kind] += 1
                position = end
            parts.append(text[position:])
            text = "".join(parts)
        return text

    def _find(self, text: str) -> list[tuple[int, int, str, str]]:
        # Accepted spans, sorted and disjoint: `starts[i]`, `ends[i]`, `found[i]`.
        starts: list[int] = []
        ends: list[int] = []
        found: list[tuple[int, int, str, str]] = []
        if "[" in text:  # placeholders already there are kept (kind "")
            for match in self._protected.finditer(text):
                starts.append(match.start())
                ends.append(match.end())
                found.append((match.start(), match.end(), "", ""))
        shape = _shape(text)
        digits = shape.count("0")
        lowered = text.lower()
        if len(lowered) != len(text):  # "İ" lower-cases to two characters
            lowered = text.translate(_ASCII_LOWER)
        for detector in self._detectors if digits else self._detectors_no_digits:
            kind, pattern, check, min_digits, shapes, needles, lower, trigger, in_shape = detector
            haystack = lowered if lower else text
            if needles:
                for word in needles:
                    if word in haystack:
                        break
                else:
                    continue
            if shapes:
                if digits < min_digits:
                    continue
                for needle in shapes:
                    if needle in shape:
                        break
                else:
                    continue
                if in_shape is not None and in_shape.search(shape) is None:
                    continue
            if trigger is not None and trigger.search(haystack) is None:
                continue
            for match in pattern.finditer(haystack):
                hit = check(match, text)
                if hit is None:
                    continue
                start, end, normalized = hit
                index = bisect_right(starts, start)
                if start >= end or (index and ends[index - 1] > start):
                    continue  # empty, or overlaps the span starting before it
                if index < len(starts) and starts[index] < end:
                    continue  # overlaps the span starting after it
                starts.insert(index, start)
                ends.insert(index, end)
                found.insert(index, (start, end, kind, normalized))
        return [span for span in found if span[2]]

    def _placeholder(self, kind: str, normalized: str) -> str:
        if self.mode != "hash":
            return f"[{kind}]"
        message = f"{kind}\x00{normalized}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self.salt, message, hashlib.sha256).hexdigest()
        return f"[{kind}:{digest[:_HASH_CHARS]}]"


_Container = dict[object, object] | list[object] | tuple[object, ...]
_CONTAINERS = (dict, list, tuple)  # as a tuple: `dict | list | tuple` inline is built per test
_Pair = tuple[object, object]


def _pairs(container: _Container) -> Iterator[_Pair]:
    if isinstance(container, dict):
        return iter(container.items())
    return enumerate(container)


def _rebuild(source: _Container, pairs: list[_Pair]) -> _Container:
    if isinstance(source, dict):
        return dict(pairs)
    values = [value for _, value in pairs]
    return tuple(values) if isinstance(source, tuple) else values


_SECRET_KEYS: dict[str, bool] = {}  # keys seen before (a JSON body has few distinct keys)


def _is_secret_key(key: object) -> bool:
    if type(key) is not str:
        return isinstance(key, str) and _SECRET_KEY.fullmatch(key) is not None
    known = _SECRET_KEYS.get(key)
    if known is None:
        known = _SECRET_KEY.fullmatch(key) is not None
        if len(_SECRET_KEYS) < 4096:
            _SECRET_KEYS[key] = known
    return known
