"""What private data looks like: patterns and validators for the privacy scanner.

Every pattern here must stay linear in the length of its input, because hostile strings
reach it. The rules that keep it so: every quantifier is bounded; a pattern that could
start anywhere inside a run of similar characters is anchored with a look-behind that
only lets it start at the beginning of the run; alternatives never overlap in a way
that makes a failed match retry exponentially. `tests/test_firewall.py` times hostile
inputs to hold us to it.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from typing import Final

# -- validators ----------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes: Visa, Mastercard (51-55, 2221-2720), Amex, Discover, JCB, Diners, UnionPay.
_CARD_IIN: Final = re.compile(
    r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|5|4[4-9]|2)|35|3[068]"
)


def card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and bool(_CARD_IIN.match(digits)) and luhn_ok(digits)


def iban_ok(text: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (separators ignored)."""
    s = re.sub(r"[ _.:+-]", "", text).upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def ip_ok(text: str) -> bool:
    if not any(c in "0123456789abcdefABCDEF" for c in text):
        return False  # "::" alone (C++ scopes, runs of colons) is not worth calling an IP
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def looks_random(token: str) -> bool:
    """A token no known format claims but that looks like a generated secret.

    Mixed case and digits, a long unbroken stretch (words joined by - _ / are
    identifiers, not secrets), and high entropy. Hex strings (UUIDs, trace ids, git
    SHAs) are ids, not secrets: they have one case only and are never flagged.
    """
    if not (any(c.isupper() for c in token) and any(c.islower() for c in token)):
        return False
    if not any(c.isdigit() for c in token):
        return False
    longest = max(re.split(r"[-_/.]", token), key=len)
    return len(longest) >= 16 and entropy(token) >= 3.7 and not name_like(longest)


_CHUNK: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_UNSAYABLE: Final = re.compile(r"[^aeiouy]{5}")


def name_like(run: str) -> bool:
    """Whether a run of letters and digits reads as a name (``Qwen2ForCausalLM``,
    ``claude3Opus20240229``, ``DeepSeekV3``): a few chunks (CamelCase words, numbers,
    acronyms of up to four capitals) averaging 2.2 characters or more, each word
    sayable (a vowel, no five consonants in a row), at most one lone capital and one
    lone short lower-case chunk. About 0.5% of random 12-20 character passwords also
    pass (2% at 10): the declared vocabulary, not this test, is what keeps names that
    were never declared from leaving the machine."""
    chunks = _CHUNK.findall(run)
    if len(chunks) > len(run) / 2.2 or sum(c.isdigit() for c in chunks) > 3:
        return False
    singles = shorts = acronyms = 0
    for c in chunks:
        if c.isdigit():
            continue
        if c.isupper():
            if len(c) > 4:
                return False
            singles += len(c) == 1
            acronyms += len(c) > 1
        elif len(c) <= 2:
            shorts += 1
        elif not any(ch in "aeiouy" for ch in c.lower()) or _UNSAYABLE.search(c.lower()):
            return False
    return singles <= 1 and shorts <= 1 and acronyms <= 2


def looks_password(run: str) -> bool:
    """A run of letters and digits (no separator, 10 or more) that reads like a generated
    password: upper case, lower case and digits, and not :func:`name_like`."""
    if not (any(c.isupper() for c in run) and any(c.islower() for c in run)):
        return False
    return any(c.isdigit() for c in run) and not name_like(run)


def hex_token_ok(text: str) -> bool:
    """Hex with letters and digits both (a 32-digit number is a number)."""
    return any(c.isdigit() for c in text) and any(not c.isdigit() for c in text)


def phone_ok(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if text.isdigit():  # bare: 00 + international, 0 + national, [1]NXXNXXXXXX
        if text.startswith("00"):
            return 8 <= digits - 2 <= 15
        if text.startswith("0"):
            return digits in (10, 11)
        return nanp_ok(text[1:] if digits == 11 and text[0] == "1" else text)
    if text.startswith(("+", "00")):
        return 8 <= digits - 2 * text.startswith("00") <= 15
    return 9 <= digits <= 12


_DATE_LIKE: Final = re.compile(r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d*")


def nanp_ok(digits: str) -> bool:
    """Ten bare digits that make a North American number (area and exchange 2-9xx), and
    are not a date (YYYYMMDDhh): 7324626933 is a phone, 2024120315 a timestamp. Unix
    seconds (1xxxxxxxxx) never start an area code."""
    return len(digits) == 10 and not _DATE_LIKE.fullmatch(digits)


# -- patterns ------------------------------------------------------------------------------

PEM_BEGIN: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]{0,40})PRIVATE KEY( BLOCK)?-----")

URL: Final = re.compile(
    r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{0,15})://"
    r"(?:([^\s/@?#\"'<>\\]{1,256})@)?"  # userinfo: credentials, always dropped
    r"(\[[0-9A-Fa-f:.]{2,45}\]|[^\s/:?#\"'<>@\\\[\]]{1,253})"  # host
    r"(?::\d{1,5})?"
    r"([/?#][^\s\"'<>]{0,4096})?"
)

JWT: Final = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{6,4096}\.[A-Za-z0-9_-]{6,8192}\.[A-Za-z0-9_-]{6,4096}"
)

BEARER: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9])(authorization\s{0,8}[:=]\s{0,8}[\"']?\s{0,8}"
    r"(?:(?:bearer|token|basic|digest)\s{1,8})?|bearer\s{1,8})[A-Za-z0-9._~+/=-]{8,4096}"
)

# Known secret formats; distinctive prefixes need no left boundary (a key glued to
# other text is still a key).
KEYS: Final = re.compile(
    r"(?P<anthropic_key>sk-ant-(?:api|admin|sid|oat)\d{2}-[A-Za-z0-9_-]{16,300})"
    r"|(?P<openai_key>sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{16,300}"
    r"|(?<![A-Za-z0-9_-])sk-[A-Za-z0-9]{20,200}(?![A-Za-z0-9_-]))"
    r"|(?P<aws_access_key>(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16})"
    r"|(?P<github_token>gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{30,255})"
    r"|(?P<gitlab_token>gl(?:pat|dt|rt|ptt|ft|cbt|imt|agent|oas)-[A-Za-z0-9_-]{20,255})"
    r"|(?P<slack_token>xox[abposr]-[A-Za-z0-9-]{10,255}|xapp-\d-[A-Za-z0-9-]{10,255})"
    r"|(?P<stripe_key>(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,255}|whsec_[A-Za-z0-9]{20,255})"
    r"|(?P<google_api_key>AIza[0-9A-Za-z_-]{35})"
    r"|(?P<huggingface_token>hf_[A-Za-z0-9]{30,255})"
    r"|(?P<npm_token>npm_[A-Za-z0-9]{36})"
)

_SECRET_WORD: Final = (
    r"(?:[A-Za-z0-9]{1,30}[_.-]){0,4}"
    r"(?:api[_-]?key|apikey|secret(?:[_-]?(?:access[_-]?)?key)?|token(?!s)|passw(?:or)?d|passwort|"
    r"passphrase|mot[_-]?de[_-]?passe|contrase[nñ]a|senha|wachtwoord|"
    r"pwd|pass|credentials?|auth(?:[_-]?token)?|access[_-]?key|private[_-]?key|client[_-]?secret|"
    r"[A-Za-z0-9]{1,30}_KEY)"
    r"(?:[_.-][A-Za-z0-9]{0,30})?"
)
ASSIGNMENT: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])([\"']?" + _SECRET_WORD + r"[\"']?\s{0,8}(?::=|=|:)\s{0,8})"
    r"(?:\"([^\"\n]{1,512})\"|'([^'\n]{1,512})'|([^\s\"',;&}\])]{1,512}))"
)
CLI_FLAG: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9_-])(--?(?:password|passwd|pass|pwd|token|api[_-]?key|secret|"
    r"auth[_-]?token|access[_-]?token|client[_-]?secret|private[_-]?key|passphrase)"
    r"(?:=|\s{1,8}|[\"']\s{0,4},\s{0,4}[\"']))(?:\"[^\"\n]{1,512}\"|'[^'\n]{1,512}'|[^\s\"']{1,512})"
)
SSHPASS: Final = re.compile(
    r"(?<![A-Za-z0-9_-])(sshpass\s{1,8}-p\s{0,8})(?:\"[^\"\n]{1,512}\"|'[^'\n]{1,512}'|\S{1,512})"
)
SSN_CONTEXT: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:ssn|social\s{1,4}security(?:\s{1,4}(?:number|no\.?))?)\s{0,4}[#:=]{0,2}\s{0,4})"
    r"(?!000|666|9\d\d)\d{3}([- ]?)(?!00)\d{2}\2(?!0000)\d{4}(?!\d)"
)
# -p glued to a password; also where argv was joined with ":" "+" or "_" (mysql:-uroot:-pX).
MYSQL_P: Final = re.compile(r"(?<![^\s:+_])-p(?![-\s])([^\s:+]{3,128})")

EMAIL: Final = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9])"
)

_WIN_SEG: Final = r"[^\\/:*?\"<>|\r\n\t ]{1,255}"
WINDOWS_PATH: Final = re.compile(
    r"(?<![A-Za-z0-9\\])(?:[A-Za-z]:(?:\\\\|\\|/)|\\\\\\\\|\\\\(?=[A-Za-z0-9]))"
    r"(?:" + _WIN_SEG + r"(?:(?:\\\\|\\|/)" + _WIN_SEG + r"){0,40}(?:\\\\|\\|/)?)?"
)
QUOTED_PATH: Final = re.compile(
    r"(\"|')((?:[A-Za-z]:[\\/]|\\\\|~|/(?=[A-Za-z0-9_.~-]))[^\"'\n]{1,1024}?)\1"
)
POSIX_PATH: Final = re.compile(
    r"(?<![^\W_])(?<![.~/\\])(?:~[\w.-]{0,32})?/[\w.@%+~-]{1,255}"
    r"(?:/[\w.@%+~-]{0,255}){1,64}"
)
TILDE_PATH: Final = re.compile(r"(?<![\w~/])~[\w.-]{0,32}/[\w.@%+~/-]{0,1024}")

# Six bytes, or Cisco's three dotted quads. The look-arounds refuse a seventh group of
# the same shape (then it is something longer), not a word joined by another separator
# (invoice.cf:14:42:1a:6f:ee, 05:2C:C0:9B:D7:7B-declined).
MAC: Final = re.compile(
    r"(?<![0-9A-Fa-f])(?:"
    r"(?<![0-9A-Fa-f]{2}[:_-])[0-9A-Fa-f]{2}(?P<ms>[:_-])[0-9A-Fa-f]{2}(?:(?P=ms)[0-9A-Fa-f]{2}){4}"
    r"(?!(?P=ms)[0-9A-Fa-f]{1,2}(?![0-9A-Za-z]))"
    r"|(?<![0-9A-Fa-f]{4}\.)[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"
    r"(?!\.[0-9A-Fa-f]{4}(?![0-9A-Za-z]))"
    r")(?![0-9A-Fa-f])"
)
IPV6: Final = re.compile(
    r"(?:(?<![0-9A-Za-z.])|(?<=[A-Za-z][._+]))(?<![0-9A-Fa-f]:)(?:[0-9A-Fa-f]{0,4}:){2,7}+"
    r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})"  # an embedded IPv4 first: ::ffff:10.1.2.3
    r"(?:%[A-Za-z0-9_.-]{1,16})?(?![0-9A-Za-z]|:[0-9A-Fa-f:]|\.\d)"
)
IPV4: Final = re.compile(
    r"(?<![0-9.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?!\d|\.\d)"
)
# Separators: a space, or any character an identifier allows between digit groups
# (4011_4923_9875_7086, 4011.4923.9875.7086, 4011:4923:...). Luhn and the issuer
# prefix decide.
CARD: Final = re.compile(r"(?<!\d)(?<!\d[.,_:-])\d(?:[ _.:+-]?\d){12,18}(?!\d|[.,_:+-]\d)")
IBAN: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ _.:+-]?[A-Za-z0-9]{4}){2,7}(?:[ _.:+-]?[A-Za-z0-9]{1,4})?"
    r"(?![A-Za-z0-9])"
)
SSN: Final = re.compile(
    r"(?<!\d)(?<!\d[-_.:+])(?!000|666|9\d\d)\d{3}([- _.:+])(?!00)\d{2}\1(?!0000)\d{4}"
    r"(?!\d|[-_.:+]\d)"
)
PHONE: Final = re.compile(
    r"(?<![0-9A-Za-z+])(?<!\d[.:/_-])(?:"
    r"(?:\+|00)\d{1,3}(?:[ ._:-]?\(\d{1,4}\))?(?:[ ._:-]?\d{1,5}){2,5}"  # international
    r"|1(?P<s1>[._:-])[2-9]\d{2}(?P=s1)[2-9]\d{2}(?P=s1)\d{4}"  # 1-700-998-6992
    r"|\(\d{2,5}\)[ ._-]?\d{2,5}(?:[ ._-]?\d{2,5}){1,2}"  # (415) 555-2671
    r"|0\d{1,4}(?:[ ._:-]\d{2,8}){1,4}"  # 020 7946 0958, 06 12 34 56 78, 020_7946_0958
    r"|[2-9]\d{2}(?P<s2>[._:-])\d{3}(?P=s2)\d{4}"  # 415-555-2671, 415_555_2671
    r"|(?<![A-Za-z])(?:1?[2-9]\d{2}[2-9]\d{6}|0[1-9]\d{8,9}|00\d{9,15})"  # bare: see phone_ok
    r")(?![0-9A-Za-z]|[.:_-]\d)"
)
WINDOWS_HOST: Final = re.compile(
    r"(?<![A-Za-z0-9-])(?:DESKTOP|LAPTOP|WIN|PC)-[A-Z0-9]{5,15}(?![A-Za-z0-9-])"
)
HOSTNAME: Final = re.compile(
    r"(?<![A-Za-z0-9.@])((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"([A-Za-z]{2,13}))(?![A-Za-z0-9]|\.[A-Za-z0-9])"
)
# Host names that carry no dot: CI runners and cloud machines named after their address.
HOST_NAME_SHAPES: Final = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"runner-[a-z0-9]{6,10}-project-\d{1,10}-concurrent-\d{1,4}"  # GitLab
    r"|fv-az\d{1,5}-\d{1,5}"  # GitHub-hosted runners
    r"|ip-(?:\d{1,3}-){3}\d{1,3}"  # EC2: ip-10-0-1-23
    # Kubernetes pods (the pod name is the container's host name): <deployment>-<replica
    # set hash>-<5>, both from the alphabet Kubernetes draws them from (no vowels).
    r"|[a-z0-9](?:[a-z0-9-]{0,40}[a-z0-9])?-[bcdfghjklmnpqrstvwxz2456789]{6,10}"
    r"-[bcdfghjklmnpqrstvwxz2456789]{5}"
    r")(?![A-Za-z0-9])"
)
# Hex runs the length of a token or a digest: 32 (128-bit tokens, MD5) or 48 and more
# (SHA-256 tokens). 40 (a git commit) and dashed UUIDs are ids and stay.
HEX_TOKEN: Final = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9a-f]{32}|[0-9A-F]{32}|[0-9a-f]{48,512}|[0-9A-F]{48,512})(?![0-9A-Za-z])"
)
# A value named by the word before it: bearer-<40 hex>, token_<hex> (a bare 40-hex run
# is a git commit and stays).
NAMED_HEX: Final = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:bearer|token|auth|api[_-]?key|secret|pat)[_.:+-])([0-9a-f]{32,128})"
    r"(?![0-9A-Za-z])"
)
# user:password, judged by the part after the colon (see password_value).
USER_PASS: Final = re.compile(
    r"(?<![A-Za-z0-9._+-])([A-Za-z][A-Za-z0-9._+-]{0,31}:)([A-Za-z0-9][A-Za-z0-9._+-]{7,63})"
    r"(?![A-Za-z0-9._+-])"
)
_DASHED_UUID: Final = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")


def password_value(value: str) -> bool:
    """The part after ``user:`` is a password: 8 or more characters with upper case,
    lower case and a digit, one piece of it mixing upper and lower case (``Passw0rd``,
    ``Correct-Horse-42``). Model tags keep one case per piece (``70b-instruct-q4_K_M``),
    and so do timestamps, versions and dates; a dashed UUID is no password."""
    if not (any(c.isupper() for c in value) and any(c.islower() for c in value)):
        return False
    if not any(c.isdigit() for c in value) or _DASHED_UUID.fullmatch(value):
        return False
    parts = [x for x in re.split(r"[-_.+:]", value) if x]
    if len(parts) > 4:
        return False  # a name built of many parts (models--org--Name-7B-Instruct-v0.3)
    return any(any(c.isupper() for c in x) and any(c.islower() for c in x) for x in parts)


PASSWORD_RUN: Final = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{10,64}(?![A-Za-z0-9])")
# Two shorter runs joined by one separator (6qL7U8f_46xGUnUq), judged as one.
PASSWORD_PAIR: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z0-9]{4,9}[_.-][A-Za-z0-9]{4,9}(?![A-Za-z0-9])"
)
TOKEN: Final = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/=_-]{20,512}(?![A-Za-z0-9+/=_-])")

# Last labels that make a dotted name a host: private-network suffixes and common TLDs.
# File extensions that are also TLDs (py, rs, md, sh, zip, pl, ...) are left out on
# purpose: "setup.py" is a file, not a host.
HOST_SUFFIXES: Final = frozenset(
    [
        "local",
        "arpa",  # home.arpa (RFC 8375)
        "lan",
        "home",
        "internal",
        "intranet",
        "corp",
        "localdomain",
        "private",
        "priv",
        "localhost",
        "com",
        "net",
        "org",
        "io",
        "dev",
        "ai",
        "app",
        "cloud",
        "co",
        "uk",
        "de",
        "fr",
        "jp",
        "cn",
        "ru",
        "nl",
        "eu",
        "us",
        "ca",
        "au",
        "in",
        "br",
        "es",
        "it",
        "ch",
        "se",
        "no",
        "dk",
        "fi",
        "pl",
        "be",
        "at",
        "cz",
        "biz",
        "info",
        "edu",
        "gov",
        "mil",
        "int",
        "tech",
        "site",
        "online",
        "xyz",
        "me",
        "tv",
        "cc",
    ]
)
DEFAULT_ALLOWED_DOMAINS: Final = (
    "anthropic.com", "openai.com", "googleapis.com", "google.com", "azure.com",
    "microsoft.com", "mistral.ai", "cohere.com", "cohere.ai", "groq.com", "together.ai",
    "together.xyz", "fireworks.ai", "deepseek.com", "perplexity.ai", "x.ai",
    "huggingface.co", "replicate.com", "amazonaws.com", "github.com", "gitlab.com",
    "pypi.org", "python.org", "npmjs.com", "reasonkit.sh",
)  # fmt: skip
