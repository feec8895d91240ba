"""Redaction of PII and secrets: every kind, its look-alikes, the three modes, JSON values."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmops.redact import KINDS, Redactor, parse_extra_patterns

pytestmark = pytest.mark.unit

MASK = Redactor()


def redact(text: str) -> str:
    return MASK.text(text)


# --- Positives: (text, expected mask output) --------------------------------------------------

EMAILS = [
    ("Write to jane.doe@example.com today.", "Write to [EMAIL] today."),
    ("CC: J.Doe+news@mail.example.co.uk, thanks", "CC: [EMAIL], thanks"),
    ("<first_last@sub.example.org>", "<[EMAIL]>"),
    ("Mon adresse : josé.garcía@exemple.fr.", "Mon adresse : [EMAIL]."),
    ('{"user": "ops-team@contoso.onmicrosoft.com"}', '{"user": "[EMAIL]"}'),
]
PHONES = [
    ("Call me on +1 (415) 555-2671 tomorrow.", "Call me on [PHONE] tomorrow."),
    ("London office: +44 20 7946 0958.", "London office: [PHONE]."),
    ("or +44 (0)20 7946 0958", "or [PHONE]"),
    ("Berlin +49 30 901820, ext. 12", "Berlin [PHONE], ext. 12"),
    ("E.164: +14155552671", "E.164: [PHONE]"),
    ("Paris +33 6 12 34 56 78 / 06 12 34 56 78", "Paris [PHONE] / [PHONE]"),
    ("Portable : 06.12.34.56.78", "Portable : [PHONE]"),
    (
        "Office (415) 555-2671 or 415-555-2671 or 415.555.2671",
        "Office [PHONE] or [PHONE] or [PHONE]",
    ),
    ("Toll free 1-800-555-0199.", "Toll free [PHONE]."),
    ("UK 020 7946 0958, mobile 07700 900123", "UK [PHONE], mobile [PHONE]"),
    ("Berlin 030 901820", "Berlin [PHONE]"),
    ("India +91 98765 43210", "India [PHONE]"),
    ("tel:+1-415-555-2671", "tel:[PHONE]"),
    ("Rufnummer +49 30 901820 am 2026-11-22", "Rufnummer [PHONE] am 2026-11-22"),
    ("Tel. 0049 30 901820 oder 0033 6 12 34 56 78", "Tel. [PHONE] oder [PHONE]"),
    ("電話番号は090-1234-5678です", "電話番号は[PHONE]です"),
]
CARDS = [
    ("Visa 4111 1111 1111 1111 exp 12/26", "Visa [CARD] exp 12/26"),
    ("card: 4111-1111-1111-1111.", "card: [CARD]."),
    ("Mastercard 5555555555554444 please", "Mastercard [CARD] please"),
    ("Amex 3782 822463 10005", "Amex [CARD]"),
    ("Discover 6011 1111 1111 1117, CVV 123", "Discover [CARD], CVV 123"),
    ("pay with 4012888888881881", "pay with [CARD]"),
    ("MC 5105-1051-0510-5100", "MC [CARD]"),
    ("card 4111111111111111 12/26", "card [CARD] 12/26"),
]
IBANS = [
    ("Transfer to DE89 3704 0044 0532 0130 00 please", "Transfer to [IBAN] please"),
    ("IBAN: GB29NWBK60161331926819.", "IBAN: [IBAN]."),
    ("FR14 2004 1010 0505 0001 3M02 606", "[IBAN]"),
    ("Dutch account NL91ABNA0417164300", "Dutch account [IBAN]"),
    ("BE68 5390 0754 7034 and NO93 8601 1117 947", "[IBAN] and [IBAN]"),
]
IPS = [
    ("Server 192.168.1.10 is down", "Server [IP] is down"),
    ("connect to 10.0.0.1:8080", "connect to [IP]:8080"),
    ("DNS 8.8.8.8, 1.1.1.1.", "DNS [IP], [IP]."),
    ("range 10.0.0.1-10.0.0.255", "range [IP]-[IP]"),
    ("v6 2001:db8::8a2e:370:7334 ok", "v6 [IP] ok"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full [IP]"),
    ("link-local fe80::1ff:fe23:4567:890a%eth0", "link-local [IP]%eth0"),
    ("https://[2001:db8::1]:443/path", "https://[[IP]]:443/path"),
    ("mapped ::ffff:192.0.2.128", "mapped [IP]"),
    ("host 2001:db8::1: unreachable", "host [IP]: unreachable"),
    ("subnet 2001:db8::/32 and 10.0.0.0/8", "subnet [IP]/32 and [IP]/8"),
]
NATIONAL_IDS = [
    ("My SSN is 123-45-6789.", "My SSN is [NATIONAL_ID]."),
    ("SSN 219 09 9999 on file", "SSN [NATIONAL_ID] on file"),
    ("NI number AB 12 34 56 C", "NI number [NATIONAL_ID]"),
    ("NINO: JG103759A", "NINO: [NATIONAL_ID]"),
    ("DNI 12345678Z", "DNI [NATIONAL_ID]"),
    ("NIE X1234567L, DNI 12345678-Z", "NIE [NATIONAL_ID], DNI [NATIONAL_ID]"),
]
SECRETS = [
    (
        "key sk-proj-abcDEF1234567890abcdefGHIJ1234 works",
        "key [SECRET] works",
    ),
    ("OPENAI_API_KEY=sk-abcdefghij1234567890ABCDEFGHIJ", "OPENAI_API_KEY=[SECRET]"),
    ("Authorization: Bearer abc123def456ghi789jkl", "Authorization: Bearer [SECRET]"),
    (
        "curl -H 'authorization: bearer sk-team-a-secret'",
        "curl -H 'authorization: bearer [SECRET]'",
    ),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [SECRET]"),
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;"
        "AccountKey=Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFy+/Q==;EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https;AccountName=acct;"
        "AccountKey=[SECRET];EndpointSuffix=core.windows.net",
    ),
    (
        "https://acct.blob.core.windows.net/c/b.json?sv=2022-11-02&sr=b&sp=r"
        "&sig=abcdEFGH1234ijklMNOP%2Bqrst%3D",
        "https://acct.blob.core.windows.net/c/b.json?sv=2022-11-02&sr=b&sp=r&sig=[SECRET]",
    ),
    (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=abcDEF123456ghiJKL789mnoPQR012stuVWX345yz=",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=[SECRET]",
    ),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "aws_access_key_id = [SECRET]"),
    (
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key=[SECRET]",
    ),
    ("token ghp_16C7e42F292c6912E7710c838347Ae178B4a here", "token [SECRET] here"),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "[SECRET]"),
    (
        "GH_TOKEN=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
        "GH_TOKEN=[SECRET]",
    ),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "jwt [SECRET]",
    ),
    ("api_key=abc123xyz and apikey: Zx9-Qw8-Er7", "api_key=[SECRET] and apikey: [SECRET]"),
    ("password=hunter2 secret=s3cr3t", "password=[SECRET] secret=[SECRET]"),
    ("Password: hunter2!", "Password: [SECRET]"),
    (
        '{"password": "correct horse battery", "client_secret": "abc"}',
        '{"password": "[SECRET]", "client_secret": "[SECRET]"}',
    ),
    ("mysql --password hunter2 -u root", "mysql --password [SECRET] -u root"),
    ("export DB_PASSWORD='pa ss'", "export DB_PASSWORD='[SECRET]'"),
    ("X-Auth-Token: 0123abcd4567efgh", "X-Auth-Token: [SECRET]"),
    ("Here is my API key: abcd1234efgh5678", "Here is my API key: [SECRET]"),
    ("GET /v1/files?token=abc123DEF456ghi&page=2", "GET /v1/files?token=[SECRET]&page=2"),
    (
        "s3 ?X-Amz-Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f0&X-Amz-Expires=300",
        "s3 ?X-Amz-Signature=[SECRET]&X-Amz-Expires=300",
    ),
    (
        "postgres://admin:s3cretPass@db.internal:5432/app",
        "postgres://admin:[SECRET]@db.internal:5432/app",
    ),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [SECRET]"),
    ("maps key AIzaSyA-1234567890abcdefghijklmnopqrstu", "maps key [SECRET]"),
    ("slack xoxb-123456789012-abcdefghijkl", "slack [SECRET]"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nq+Lw/abc=\n"
        "-----END RSA PRIVATE KEY-----\nthanks",
        "[SECRET]\nthanks",
    ),
    (
        "key: -----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA\\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "key: [SECRET]",
    ),
    ("truncated -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF", "truncated [SECRET]"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    EMAILS + PHONES + CARDS + IBANS + IPS + NATIONAL_IDS + SECRETS,
)
def test_positives_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


# --- Look-alikes that must stay -----------------------------------------------------------------

NEGATIVES = [
    # e-mail
    "ping @alice on Slack",
    "icon@2x.png and logo@3x.jpg",
    "ssh user@localhost",
    "npm i left-pad@1.3.0",
    "name at example dot com",
    # phone-like numbers
    "released on 2026-11-22 at 12:30:45",
    "versions 1.2.3 and 10.0.19045 and 3.11.7",
    "total 1,234,567.89 EUR, 300 requests, in 2026",
    "order ORD415-555-2671 and ref A-415-555-2671",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "uuid 12345678-1234-1234-1234-123456789012",
    "call 555-2671",
    "+1 day, +2 weeks",
    "ISBN 978-0-306-40615-7",
    "between 1 000 and 2 000 units",
    "dates 01-02-2026 and 01.02.2026 and 01/02/2026",
    "model gpt-4o-2024-08-06 api-version 2024-10-21",
    "sizes 128 256 1024 2048",
    # cards
    "not a card: 4111 1111 1111 1112",
    "not a card: 5555555555554445",
    "order 1234567812345678",
    "id 41111111111111111111111",
    # IBAN
    "bad check DE88 3704 0044 0532 0130 00",
    "too short DE89 3704 0044 0532 0130",
    "unknown country XX89 3704 0044 0532 0130 00",
    "product code AB12 CDEF GHIJ",
    # IP
    "999.1.1.1 and 256.1.1.1",
    "version 1.2.3.4 and v1.2.3.4 and build 10.0.0.1",
    "MAC 00:1A:2B:3C:4D:5E, time 12:30:45, ::1",
    "std::vector<int> and a::b and dead::beef",
    "padded 01.02.03.04",
    "Mozilla/5.0 Chrome/120.0.0.0 Safari/537.36",
    # national ids
    "SSN 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000",
    "QQ123456C DA123456A GB123456A AB123456E AB 12 3456 C",
    "DNI 12345678A",
    # secrets
    "a skeleton key, sk-abc123 and sk-this-is-a-long-hyphenated-slug",
    "the bearer of bad news; a basic understanding",
    "Password: click the link in the e-mail",
    "reset your password, then set secret: yes",
    "api_key=api_key, password=None, token = settings.api_key",
    "client = OpenAI(api_key=os.getenv('OPENAI_API_KEY'))",
    'password="${DB_PASSWORD}" and api_key: "{{ secrets.key }}"',
    "password=**** api_key=<your-key>",
    "max_tokens=256, prompt_tokens: 12",
    "https://example.com/search?q=test&key=value&page=2",
    "the access token expired; my secret key is here; The API key: see docs",
    "eyJhbGciOiJIUzI1NiJ9 alone",
    "AKIA1234 is too short",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_kept(text: str) -> None:
    assert redact(text) == text


def test_ip_and_card_are_not_phones() -> None:
    assert redact("host 192.168.100.200") == "host [IP]"
    assert redact("card 4111 1111 1111 1111") == "card [CARD]"
    assert redact("ssn 123-45-6789") == "ssn [NATIONAL_ID]"


# --- Overlaps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=4111111111111111", "password=[SECRET]"),
        ("postgres://admin:s3cret@10.0.0.5:5432/db", "postgres://admin:[SECRET]@[IP]:5432/db"),
        ("mail john.4155552671@example.com", "mail [EMAIL]"),
        ("IBAN DE89370400440532013000 only", "IBAN [IBAN] only"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "Bearer [SECRET]"),
        ("4111111111111111@example.com", "[EMAIL]"),
        ("+1 415 555 2671 / 4111 1111 1111 1111", "[PHONE] / [CARD]"),
    ],
)
def test_overlapping_matches_are_never_garbled(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_existing_placeholders_are_kept() -> None:
    text = "[EMAIL] wrote [PHONE:0123456789] and [CARD]"
    assert redact(text) == text
    assert Redactor(mode="hash", salt=b"s").text(text) == text


# --- Modes ------------------------------------------------------------------------------------

SAMPLE = (
    "Jane (jane.doe@example.com, +44 20 7946 0958) paid with 4111 1111 1111 1111 "
    "from DE89 3704 0044 0532 0130 00 at 192.168.1.10; SSN 123-45-6789; "
    "key sk-abcdefghij1234567890XYZ"
)


def test_mask_mode_exact_output() -> None:
    assert redact(SAMPLE) == (
        "Jane ([EMAIL], [PHONE]) paid with [CARD] from [IBAN] at [IP]; SSN [NATIONAL_ID]; "
        "key [SECRET]"
    )


def test_hash_mode_is_stable_and_salted() -> None:
    one = Redactor(mode="hash", salt=b"pepper").text(SAMPLE)
    two = Redactor(mode="hash", salt=b"pepper").text(SAMPLE)
    other = Redactor(mode="hash", salt=b"other").text(SAMPLE)
    assert one == two
    assert one != other
    tokens = re.findall(r"\[([A-Z_]+):([0-9a-f]{10})\]", one)
    assert [kind for kind, _ in tokens] == [
        "EMAIL", "PHONE", "CARD", "IBAN", "IP", "NATIONAL_ID", "SECRET"
    ]  # fmt: skip
    assert re.sub(r"\[([A-Z_]+):[0-9a-f]{10}\]", r"[\1]", one) == redact(SAMPLE)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Jane.Doe@Example.com", "jane.doe@example.com"),
        ("+1 (415) 555-2671", "+1-415-555-2671"),
        ("4111 1111 1111 1111", "4111-1111-1111-1111"),
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("2001:db8::1", "2001:0DB8:0:0:0:0:0:1"),
        ("AB 12 34 56 C", "AB123456C"),
    ],
)
def test_hash_normalizes_trivial_differences(a: str, b: str) -> None:
    hasher = Redactor(mode="hash", salt=b"s")
    assert hasher.text(a) == hasher.text(b)


def test_hash_is_a_salted_hmac_of_kind_and_normalized_value() -> None:
    hasher = Redactor(mode="hash", salt=b"s")
    digest = hmac.new(b"s", b"EMAIL\x00jane.doe@example.com", hashlib.sha256).hexdigest()
    assert hasher.text("Mail Jane.Doe@example.COM") == f"Mail [EMAIL:{digest[:10]}]"
    assert hasher.text("a@example.com") != hasher.text("b@example.com")


def test_off_mode_returns_the_input() -> None:
    off = Redactor(mode="off")
    assert off.text(SAMPLE) is SAMPLE
    value: dict[str, Any] = {"messages": [{"content": SAMPLE}]}
    assert off.value(value) is value
    assert off.text_with_counts(SAMPLE) == (SAMPLE, {})


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mask, hash, off"):
        Redactor(mode="scramble")  # type: ignore[arg-type]


def test_counts() -> None:
    text, counts = MASK.text_with_counts(SAMPLE + " and john@example.org")
    assert "[EMAIL]" in text
    assert dict(counts) == {
        "EMAIL": 2, "PHONE": 1, "CARD": 1, "IBAN": 1, "IP": 1, "NATIONAL_ID": 1, "SECRET": 1
    }  # fmt: skip
    assert MASK.text_with_counts("nothing here") == ("nothing here", {})


# --- JSON values ------------------------------------------------------------------------------

CHAT: dict[str, Any] = {
    "model": "gpt-4o-2024-08-06",
    "temperature": 0.2,
    "max_tokens": 256,
    "stream": False,
    "user": "jane.doe@example.com",
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "My card is 4111 1111 1111 1111, call +44 20 7946 0958"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "send_email",
                        "arguments": json.dumps({"to": "bob@example.org", "body": "hi"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "sent"}'},
    ],
    "tools": [{"type": "function", "function": {"name": "send_email", "parameters": {}}}],
    "logprobs": [{"token": "Hello", "logprob": -0.1}],
    "metadata": {"api_key": "plainvalue", "Authorization": "Bearer xyz", "count": 3},
    "tags": ("10.0.0.1", 5, None, True),
}


def test_value_redacts_every_string_and_keeps_the_input() -> None:
    original = copy.deepcopy(CHAT)
    result = MASK.value(CHAT)
    assert CHAT == original  # never mutated
    assert isinstance(result, dict)
    assert result["model"] == "gpt-4o-2024-08-06"
    assert result["temperature"] == 0.2 and result["max_tokens"] == 256
    assert result["stream"] is False
    assert result["user"] == "[EMAIL]"
    messages = result["messages"]
    assert messages[0] == {"role": "system", "content": "You are helpful."}
    assert messages[1]["content"][0] == {
        "type": "text",
        "text": "My card is [CARD], call [PHONE]",
    }
    assert messages[1]["content"][1] == CHAT["messages"][1]["content"][1]
    arguments = messages[2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"to": "[EMAIL]", "body": "hi"}
    assert messages[2]["content"] is None
    assert messages[3]["content"] == '{"status": "sent"}'
    assert result["logprobs"] == [{"token": "Hello", "logprob": -0.1}]
    # strings under credential-like keys go as a whole; keys themselves are kept
    assert result["metadata"] == {"api_key": "[SECRET]", "Authorization": "[SECRET]", "count": 3}
    assert result["tags"] == ("[IP]", 5, None, True)
    # new containers all the way down
    assert result is not CHAT and messages is not CHAT["messages"]
    assert messages[1]["content"][1] is not CHAT["messages"][1]["content"][1]


def test_value_of_scalars_and_counts() -> None:
    assert MASK.value("mail jane@example.com") == "mail [EMAIL]"
    assert MASK.value(None) is None
    assert MASK.value(42) == 42
    redacted, counts = MASK.value_with_counts(CHAT)
    assert counts == {"EMAIL": 2, "CARD": 1, "PHONE": 1, "SECRET": 2, "IP": 1}
    assert redacted == MASK.value(CHAT)


def test_value_survives_deep_nesting() -> None:
    deep: Any = "call 415-555-2671"
    for _ in range(5000):
        deep = [deep]
    result = MASK.value(deep)
    for _ in range(5000):
        assert isinstance(result, list)
        result = result[0]
    assert result == "call [PHONE]"


# --- Extra patterns ---------------------------------------------------------------------------


def test_extra_patterns() -> None:
    patterns = parse_extra_patterns(
        '{"ticket": "TICKET-\\\\d+", "employee id": "(?i)emp-\\\\d{6}"}'
    )
    assert patterns == {"ticket": r"TICKET-\d+", "employee id": r"(?i)emp-\d{6}"}
    redactor = Redactor(extra=patterns)
    assert redactor.text("See TICKET-4821 from EMP-123456 (jane@example.com)") == (
        "See [TICKET] from [EMPLOYEE_ID] ([EMAIL])"
    )
    _, counts = redactor.text_with_counts("TICKET-1 TICKET-2")
    assert counts == {"TICKET": 2}
    assert redactor.text(redactor.text("TICKET-1")) == "[TICKET]"
    hashed = Redactor(mode="hash", salt=b"s", extra=patterns).text("TICKET-1")
    assert re.fullmatch(r"\[TICKET:[0-9a-f]{10}\]", hashed)


def test_extra_pattern_value_group_and_builtins_first() -> None:
    redactor = Redactor(extra={"order": r"order #(?P<value>\d+)", "digits": r"\d{16}"})
    assert redactor.text("order #12345 shipped") == "order #[ORDER] shipped"
    # the built-in card detector wins over the broader extra pattern
    assert redactor.text("4111111111111111 and 1234567890123456") == "[CARD] and [DIGITS]"


def test_extra_patterns_are_copied() -> None:
    extra = {"ticket": r"TICKET-\d+"}
    redactor = Redactor(extra=extra)
    extra["other"] = "x"
    assert dict(redactor.extra) == {"ticket": r"TICKET-\d+"}


@pytest.mark.parametrize("raw", ["", "   "])
def test_no_extra_patterns(raw: str) -> None:
    assert parse_extra_patterns(raw) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"ticket": "TICKET-(\\\\d+"}', r"'ticket'.*not a valid regular expression"),
        ('{"ok": "a+", "broken": "[a-"}', r"'broken'"),
        ("TICKET-\\d+", "not valid JSON"),
        ('["TICKET-\\\\d+"]', "JSON object"),
        ('{"ticket": 5}', r"'ticket' must be a string"),
        ('{"---": "x"}', "no letters or digits"),
        ('{"anything": "x*"}', r"'anything'.*matches empty text"),
    ],
)
def test_bad_extra_patterns_name_the_problem(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_extra_patterns(raw)


def test_redactor_rejects_bad_extra_pattern() -> None:
    with pytest.raises(ValueError, match="'ticket'"):
        Redactor(extra={"ticket": "("})


# --- Properties ---------------------------------------------------------------------------------

FRAGMENTS = [text for text, _ in EMAILS + PHONES + CARDS + IBANS + IPS + NATIONAL_IDS + SECRETS]
FRAGMENTS += [*NEGATIVES, "[EMAIL]", "[SECRET:0123456789]", " ", "\n", "-", ".", ":", "@", "="]
# Text assembled from realistic pieces glued together without spaces exercises the boundaries.
pieces = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=8).map("".join)
anything = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)


@settings(max_examples=300, deadline=None)
@given(text=pieces | anything)
@example(text="4111111111111111-415-555-2671")
@example(text="jane@example.com415-555-2671")
def test_redaction_is_idempotent(text: str) -> None:
    once = MASK.text(text)
    assert MASK.text(once) == once
    hasher = Redactor(mode="hash", salt=b"s")
    hashed = hasher.text(text)
    assert hasher.text(hashed) == hashed


@settings(max_examples=300, deadline=None)
@given(text=anything)
def test_text_never_raises(text: str) -> None:
    for redactor in (MASK, Redactor(mode="hash", salt=b"\x00salt")):
        result, counts = redactor.text_with_counts(text)
        assert isinstance(result, str)
        assert set(counts) <= set(KINDS)
        assert (result == text) == (not counts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | pieces,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["content", "text", "password", "token", "x"]), children, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values)
def test_value_never_mutates(value: Any) -> None:
    before = copy.deepcopy(value)
    result = MASK.value(value)
    assert value == before
    assert json.loads(json.dumps(result)) == result


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_the_shallow_fast_path_redacts_as_the_full_walk_does(value: Any) -> None:
    """`value` takes the usual shapes (a list of flat dicts, a flat dict) with comprehensions;
    the iterative walk handles everything else. Both must give the same copy and counts."""
    fast, fast_counts = MASK.value_with_counts(value)
    counts: Counter[str] = Counter()
    full = MASK._walk_deep(value, counts)
    assert fast == full
    assert fast_counts == counts
