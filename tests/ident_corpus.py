"""Identifier-shaped privacy corpus, TUNING set (the detector engineer may read this file).

Every ``text`` is a value the telemetry schema accepts in an identifier field: it matches
``[A-Za-z0-9][A-Za-z0-9_.:+-]*`` and is at most 64 characters long (no spaces, ``/``, ``@``,
quotes, ``=``, newlines). Free text cannot be stored, so what is left to catch is private data
*shaped like an identifier*, e.g. sent as ``CommandEvent(command=...)`` or ``model=...``.
The held-out twin (``ident_corpus_heldout.py``) follows exactly the same rules with other
random values, other hand-picked examples and other shapes/positions.

Format: ``Case(category, text, secrets, keep)`` from ``tests/privacy_corpus.py``.
``secrets`` must not occur anywhere in the filtered output; for long values the trailing part is
listed too (last 8 characters of a token, last two digit groups of a card/IBAN/phone), so a match
that stops short of the end fails. ``keep`` must occur unchanged. In secret cases ``keep`` holds
the command-like context around the secret (``deploy`` in ``deploy-4011_4923_9875_7086``); in
``keep`` cases it is the whole value. Categories with no identifier shape are absent: email
(needs ``@``), pem_private_key (needs spaces/newlines), the path categories (need ``/``, ``~``,
``\\`` or spaces).

LABELLING RULES (what counts as private in an identifier-shaped value)
---------------------------------------------------------------------
Separators: digit/hex groups (cards, IBANs, SSNs, phones, MACs) are joined by one of ``_``,
``-``, ``.``, ``:`` or nothing (``+`` only as the leading ``+`` of a phone number). A secret may
be the whole value or sit at the start, middle or end of a command-/model-like value, joined
to its context by any of ``_ - . : +`` (``deploy-<card>``, ``think:<iban>``, ``<ssn>.retry``,
``llama3.2+<card>``, ``gpt-4o-mini_<card>``), possibly padded to exactly 64 characters.
Where a token's own alphabet contains ``-``/``_`` a suffix context is joined with ``.``/``:``
/``+`` so the end of the token is unambiguous.
Scoring: recall is per case (every listed secret gone); keep-category cases must survive
1.0. Context keeps inside secret cases (``deploy``, ``retry``) are counted like the keeps of
``privacy_corpus.py`` (a detector should remove the secret span, not the whole value).

PII
* credit_card: 13-19 digits passing Luhn with a real issuer prefix (Visa 4, Mastercard 51-55 /
  2221-2720, Amex 34/37, Discover 6011/65/644-649), grouped 4-4-4-4 (Amex 4-6-5) with one
  separator, or ungrouped.
* iban: valid mod-97 IBAN (any country), compact or in groups of 4, upper or lower case.
* ssn: US SSN as 3-2-4 digits joined by a separator (``611.34.8541``, ``611_34_8541``);
  area not 000/666/9xx, group not 00, serial not 0000. A bare 9-digit number is NOT labelled
  an SSN (byte counts, ids).
* phone: (a) international: ``+`` or ``00`` then country code and 7-12 more digits, grouped with
  separators or not; (b) national formats with a trunk ``0`` (``020_7946_0958``,
  ``06.12.34.56.78``, ``0151-2345-6789``), grouped, or bare 10-11 digits starting ``0[1-9]``;
  (c) NANP ``NXX-NXX-XXXX`` (N = 2-9) with any separator or bare, optionally with leading
  ``1``. RULE FOR BARE 10-DIGIT NUMBERS: a 10-digit number whose 1st and 4th digits are 2-9 is a
  phone (``7324626933``); 10-digit numbers starting with ``1`` are unix-epoch seconds and 13-digit
  numbers starting with ``1`` are epoch milliseconds -> keep. (Hence e.g. ``2147483647`` would
  count as a phone; the corpus has no keep value of that shape.)
* ipv4: dotted quad, every octet 0-255 (also with ``:port``). A 4-part version whose parts are
  all <= 255 would be an IPv4 too, so keep-versions here always have a part > 255 or <= 3 parts.
  Loopback/unspecified (127.0.0.1, 0.0.0.0, ::1, localhost) are not labelled either way.
* ipv6: 8 hex groups, or ``::``-compressed with at least 3 groups, or ``::ffff:a.b.c.d``.
  ``HH:MM:SS`` times and ``name:tag`` values are not IPv6.
* mac: 6 hex bytes joined by ``:`` / ``-`` / ``_``, or Cisco ``xxxx.xxxx.xxxx``.
* hostname: machine / network names: anything ending in ``.home.arpa``, ``.lan``, ``.internal``
  (incl. ``ip-10-0-1-23.ec2.internal``, ``*.compute.internal``), ``.local``, ``.localdomain``,
  ``.corp``, ``.intranet``; Windows default names ``DESKTOP-XXXXXXX`` / ``LAPTOP-XXXXXXX``;
  GitLab runner names ``runner-<id>-project-<n>-concurrent-<n>``; GitHub-hosted runner machines
  ``fv-az<n>-<n>``; Kubernetes pod names ``<name>-<rs hash>-<5 chars>`` (hash and suffix from the
  k8s alphabet ``bcdfghjklmnpqrstvwxz2456789``). Pod names are labelled private because a pod
  name IS the container's hostname (``socket.gethostname()``/``$HOSTNAME`` inside k8s), it embeds
  the customer's internal deployment name, and the spec forbids hostnames/network identifiers.
  The first label (the distinguishing part) is listed as a secret as well. ``+local`` in a
  version (``0.23.0+local``) is not a hostname.
SECRETS
* vendor tokens keep their real prefixes with fake random bodies: anthropic_key ``sk-ant-...``,
  openai_key ``sk-``/``sk-proj-``/``sk-svcacct-``, aws_access_key ``AKIA``/``ASIA`` + 16,
  aws_secret_key (40 base64 chars, no ``/``), github_token ``gh[pousr]_``/``github_pat_``,
  gitlab_token ``glpat-``/``gldt-``/``glrt-``/``glptt-``, slack_token ``xox[abpr]-``/``xapp-``,
  stripe_key ``sk_live_``/``sk_test_``/``rk_live_``/``rk_test_``/``whsec_``, google_api_key ``AIza`` + 35 /
  ``ya29.``, huggingface_token ``hf_`` + 34 letters. Tokens longer than 64 characters appear
  TRUNCATED at the 64-character limit and are still secrets.
* jwt: base64url ``eyJ...`` header ``.`` payload ``.`` signature (signature possibly truncated or
  empty); the payload segment is listed as a secret of its own.
* bearer: bare hex tokens of 32 or 64 characters (any case) in any position; a 40-hex run is a
  token when it follows a credential word (token, bearer, auth, apikey, secret, pat) - a bare
  40-hex run is NOT labelled here (it is a git commit SHA in the free-text corpus). Also
  base62 tokens of 32+ characters. DECISION: a bare 32-hex string is a token (secret) even
  though it could be a dash-less UUID; only canonical dashed UUIDs (8-4-4-4-12, any case)
  are kept. Hex runs shorter than 32 (git short hashes 7-12, span ids 16, ``0x80070005``) are kept.
* url_credentials: ``user:password`` pairs (``alice:S3cr3tPassw0rd``) where the part after the
  ``:`` has >= 8 characters, contains an upper-case letter, a lower-case letter and a digit, and
  is not a model id or Ollama-style model tag (sizes ``70b``/``3.8b``/``8x7b``, ``latest``,
  ``instruct``/``chat``/``mini``/``128k``, quantisations ``q4_0``/``q4_K_M``/``fp16``, ``v0.3``,
  joined by ``-``), not a dashed UUID, version, date or number. So ``plan:execute``,
  ``think:claude-3-5-sonnet-20241022``, ``llama3.1:70b-instruct-q4_K_M`` and
  ``session:<uuid>`` are kept. The whole ``user:password`` pair is secret.
* key_assignment: a key NAMED as a secret (``password``, ``passwd``, ``pwd``, ``secret``,
  ``token``, ``api_key``/``apikey``/``api-key``, ``access_key``, ``private_key``,
  ``client_secret``, ``auth_token``, ``credentials``, optionally with a qualifier such as
  ``DB_``/``smtp.``), then ``:``, then a value of >= 6 characters that is not purely numeric.
  The value is secret (whatever its entropy), the key name is kept. Counters such as
  ``max_tokens:4096``, ``token_count:812`` and words such as ``password-reset`` are kept.
* cli_password_flag: argv joined with identifier separators: ``--password``, ``--passwd``,
  ``--token``, ``--api-key``, ``--secret`` followed by one separator and the value, or mysql
  style ``-p`` glued to the value (``-pHunter2024``). The value runs to the next ``-``-flag
  or the end. ``-p:8080`` (port) is kept.
* high_entropy: random passwords, 12-20 characters of ``[A-Za-z0-9]`` with
  upper case, lower case and digits mixed at random, anywhere in a value; a password may also
  be two such random parts (each >= 6 characters with upper, lower and digit) joined by one
  ``_``, ``-`` or ``.``. CamelCase words with a digit
  (``Qwen2ForCausalLM``, ``GPT2LMHeadModel``) are not random and are kept.
KEEP (keep-rate must be 1.0): model ids of every provider incl. Bedrock ``...-v1:0`` and Ollama
``name:tag`` ids, HF repo names and cache dirs, versions (semver, PEP 440, calver, kernel,
browser), error codes, dashed UUIDs, command/tool/profile names, dates, ISO timestamps,
epoch seconds/millis, counts, ports, git short hashes, CPU/GPU arch strings.
NOT LABELLED EITHER WAY (absent from both files): provider request/message ids (``req_...``,
``msg_...``, ``chatcmpl-...``), fine-tuned model ids ``ft:...:org::id``, loopback addresses,
StatefulSet ordinals (``web-0``), ``trace_id:<32 hex>`` / 40-hex commit SHAs. NOTE: the
free-text corpus (privacy_corpus.py) keeps ``trace_id=<32 hex>`` and ``commit <40 hex>``; the
bare-32-hex-is-a-token rule here holds for identifier values without such a key.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import uuid

try:
    from tests.privacy_corpus import CATEGORIES, Case
except ImportError:  # run as ``python tests/ident_corpus.py``
    from privacy_corpus import CATEGORIES, Case

IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
SEED = 20241022
rng = random.Random(SEED)
CASES: list[Case] = []

DIG = string.digits
LOW = string.ascii_lowercase
UP = string.ascii_uppercase
B62 = DIG + LOW + UP
HEX = "0123456789abcdef"
K8S = "bcdfghjklmnpqrstvwxz2456789"
SEPS = ("_", "-", ".", ":")


def rs(alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def mixed(n: int) -> str:
    """Random base62 with at least 2 upper, 2 lower, 2 digits."""
    while True:
        s = rs(B62, n)
        if (
            sum(c.isupper() for c in s) >= 2
            and sum(c.islower() for c in s) >= 2
            and sum(c.isdigit() for c in s) >= 2
        ):
            return s


def add(cat: str, text: str, secrets: tuple[str, ...] = (), keep: tuple[str, ...] = ()) -> None:
    CASES.append(Case(cat, text, tuple(dict.fromkeys(secrets)), tuple(dict.fromkeys(keep))))


def place(secret: str, ctx: str, sep: str) -> tuple[str, tuple[str, ...]]:
    """Put a secret in a command-like value: ctx 'pre', 'suf', 'mid', 'bare' or 'a|b'."""
    pre, suf = {
        "bare": ("", ""),
        "pre": (rng.choice(["deploy", "think", "run", "sync", "billing", "export"]), ""),
        "suf": ("", rng.choice(["retry", "failed", "v2", "done", "cached"])),
        "mid": (rng.choice(["think", "plan", "job", "task"]), rng.choice(["retry", "step2", "ok"])),
    }[ctx]
    text = (pre + sep if pre else "") + secret + (sep + suf if suf else "")
    return text, tuple(x for x in (pre, suf) if x)


def tail(s: str, n: int = 8) -> str:
    return s[-n:]


PAD_WORDS = {1: "x", 2: "eu", 3: "job", 4: "sync", 5: "retry", 6: "deploy", 7: "nightly",
             8: "pipeline", 9: "reconcile", 10: "migrations", 11: "integration"}  # fmt: skip


def fill64(secret: str, lead: tuple[str, ...], sep: str = "-") -> tuple[str, tuple[str, ...]]:
    """``<lead words...><pad words...>-<secret>`` of exactly 64 characters."""
    words = list(lead)
    room = 64 - len(secret) - 1 - len(sep.join(words)) - (1 if words else 0)
    while room > 0:
        n = min(room if room <= 11 else 8, 11)
        words.append(
            rng.choice(["pipeline", "backfill", "rollouts", "workflow"]) if n == 8 else PAD_WORDS[n]
        )
        room -= n + 1
        if room == 0:
            break
        if room < 0:  # the separator of the last word did not fit: lengthen one word
            words.pop()
            room += n + 1
            words.append(PAD_WORDS[room])
            room = 0
    text = sep.join(words) + sep + secret
    return text, tuple(dict.fromkeys(w for w in words if w != "x"))


# ----------------------------------------------------------------------------- credit cards
def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + rs(DIG, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def card_groups(num: str) -> list[str]:
    if len(num) == 15:
        return [num[:4], num[4:10], num[10:]]
    return [num[i : i + 4] for i in range(0, len(num), 4)]


ISSUERS = [("4", 16), ("51", 16), ("53", 16), ("2221", 16), ("2720", 16), ("34", 15),
           ("37", 15), ("6011", 16), ("65", 16), ("4", 16), ("55", 16)]  # fmt: skip
add("credit_card", "4011_4923_9875_7086", ("4011_4923_9875_7086", "9875_7086"))
add("credit_card", "pay-4111.1111.1111.1111", ("4111.1111.1111.1111", "1111.1111"), ("pay",))
for i, (prefix, length) in enumerate(ISSUERS):
    num = luhn_complete(prefix, length)
    sep = ["_", "-", ".", ":", "", "_", "-", ".", ":", "", "-"][i]
    g = card_groups(num)
    card = sep.join(g)
    last2 = sep.join(g[-2:]) if sep else num[-8:]
    ctx = ["bare", "pre", "suf", "mid", "bare", "pre", "bare", "suf", "mid", "pre", "bare"][i]
    text, keep = place(card, ctx, rng.choice(["-", ":", "."]) if ctx != "bare" else "")
    add("credit_card", text, (card, last2), keep)
# a model-like value carrying a card
num = luhn_complete("4", 16)
add("credit_card", f"gpt-4o:{num}", (num, num[-8:]), ("gpt-4o",))

# ----------------------------------------------------------------------------- IBAN
IBAN_SPECS = {  # country: BBAN pattern (n digit, a upper letter, c alnum)
    "DE": "18n", "ES": "20n", "FR": "10n11c2n", "GB": "4a14n", "NL": "4a10n", "IT": "1a10n12c",
    "BE": "12n", "AT": "16n",
}  # fmt: skip


def bban(pattern: str) -> str:
    out = ""
    for count, kind in re.findall(r"(\d+)([nac])", pattern):
        alpha = {"n": DIG, "a": UP, "c": DIG + UP}[kind]
        out += rs(alpha, int(count))
    return out


def iban(country: str) -> str:
    b = bban(IBAN_SPECS[country])
    num = int("".join(str(int(c, 36)) for c in b + country + "00"))
    return f"{country}{98 - num % 97:02d}{b}"


add("iban", "ES43-8053-0898-8120-5340-3588", ("ES43-8053-0898-8120-5340-3588", "5340-3588"))
for i, cc in enumerate(["DE", "ES", "FR", "GB", "NL", "IT", "BE", "AT", "DE", "ES", "GB", "NL"]):
    ib = iban(cc)
    sep = ["", "-", "_", ".", ":", "", "-", "_", ".", "-", "", ":"][i]
    groups = [ib[j : j + 4] for j in range(0, len(ib), 4)]
    txt = sep.join(groups) if sep else ib
    last2 = sep.join(groups[-2:]) if sep else ib[-8:]
    ctx = ["bare", "bare", "pre", "suf", "mid", "pre", "bare", "suf", "pre", "mid", "bare", "bare"][
        i
    ]
    text, keep = place(txt, ctx, "" if ctx == "bare" else rng.choice(["-", ":"]))
    add("iban", text, (txt, last2), keep)

# ----------------------------------------------------------------------------- SSN
add("ssn", "611.34.8541", ("611.34.8541", "34.8541"))
add("ssn", "611-34-8541", ("611-34-8541", "34-8541"))
for i in range(8):
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    grp, ser = rng.randint(1, 99), rng.randint(1, 9999)
    sep = SEPS[i % 4]
    s = f"{area:03d}{sep}{grp:02d}{sep}{ser:04d}"
    ctx = ["bare", "pre", "suf", "mid"][(i // 2) % 4]
    text, keep = place(s, ctx, "" if ctx == "bare" else ("-" if sep != "-" else ":"))
    add("ssn", text, (s, f"{grp:02d}{sep}{ser:04d}"), keep)

# ----------------------------------------------------------------------------- phone
add("phone", "tel:+44-20-7946-0958", ("+44-20-7946-0958", "7946-0958"), ("tel",))
add("phone", "7324626933", ("7324626933", "4626933"))


def nanp() -> tuple[str, str, str]:
    return (
        f"{rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}",
        f"{rng.randint(2, 9)}{rs(DIG, 2)}",
        rs(DIG, 4),
    )


PHONES: list[tuple[str, ...]] = []  # groups; first group may carry + / 00 / trunk 0
a, e, l_ = nanp()
PHONES += [("+1", a, e, l_)]
a, e, l_ = nanp()
PHONES += [(a, e, l_)]
a, e, l_ = nanp()
PHONES += [("1", a, e, l_)]
PHONES += [("+44", "20", rs(DIG, 4), rs(DIG, 4)), ("020", rs(DIG, 4), rs(DIG, 4)),
           ("+44", "7" + rs(DIG, 3), rs(DIG, 6)), ("07" + rs(DIG, 3), rs(DIG, 6)),
           ("+49", "30", rs(DIG, 8)), ("030", rs(DIG, 7)), ("0151", rs(DIG, 4), rs(DIG, 4)),
           ("+33", "6", rs(DIG, 2), rs(DIG, 2), rs(DIG, 2), rs(DIG, 2)),
           ("06", rs(DIG, 2), rs(DIG, 2), rs(DIG, 2), rs(DIG, 2)),
           ("+34", "6" + rs(DIG, 2), rs(DIG, 3), rs(DIG, 3)),
           ("+31", "6", rs(DIG, 8)), ("06", rs(DIG, 8)),
           ("+91", "9" + rs(DIG, 4), rs(DIG, 5)), ("0049", "171", rs(DIG, 7))]  # fmt: skip
for i, groups in enumerate(PHONES):
    sep = [
        "-",
        ".",
        "_",
        ":",
        "-",
        "_",
        ".",
        "-",
        "_",
        ".",
        ":",
        "-",
        "_",
        ".",
        "-",
        "_",
        "-",
        ".",
    ][i]
    if i in (5, 13):
        sep = ""  # ungrouped
    ph = sep.join(groups)
    last = sep.join(groups[-2:]) if sep and len(groups) > 2 else groups[-1] if sep else ph[-7:]
    if ph.startswith("+"):
        pre = rng.choice(["tel", "sms", "call", "notify", "whatsapp"])
        text, keep = f"{pre}{rng.choice([':', '-', '_'])}{ph}", (pre,)
    else:
        ctx = ["bare", "pre", "suf", "mid"][i % 4]
        text, keep = place(ph, ctx, "" if ctx == "bare" else ("-" if sep != "-" else ":"))
    add("phone", text, (ph, last), keep)

# ----------------------------------------------------------------------------- IPv4
for i in range(8):
    first = [10, 192, 172, 100, 203, 185, 34, 52][i]
    ip = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    form = i % 4
    if form == 0:
        text, keep = ip, ()
    elif form == 1:
        port = rng.choice([8080, 5432, 443, 6379])
        text, keep = f"{ip}:{port}", ()
    elif form == 2:
        pre = rng.choice(["upstream", "peer", "bind"])
        text, keep = f"{pre}:{ip}", (pre,)
    else:
        suf = rng.choice(["timeout", "refused"])
        text, keep = f"{ip}-{suf}", (suf,)
    add("ipv4", text, (ip,), keep)


# ----------------------------------------------------------------------------- IPv6
def hexg(n: int = 4) -> str:
    return rng.choice("123456789abcdef") + rs(HEX, n - 1)


V6 = [
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    f"2001:db8::{hexg()}:{hexg(3)}:{hexg()}",
    f"fe80::{hexg(3)}:{hexg()}:{hexg()}:{hexg()}",
    f"fd{rs(HEX, 2)}:{hexg()}:{hexg()}::{hexg()}",
    f"2a00:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}",
    f"2600:{hexg()}:{hexg()}::{hexg(2)}".upper(),
    f"2001:db8:{hexg()}::{hexg()}:{hexg()}",
    "::ffff:192.0.2.128",
]
for i, v6 in enumerate(V6):
    end = ":".join(v6.split(":")[-2:])
    if i % 3 == 1:
        text, keep = f"bind-{v6}", ("bind",)
    elif i % 3 == 2:
        text, keep = f"{v6}.timeout", ("timeout",)
    else:
        text, keep = v6, ()
    add("ipv6", text, (v6, end) if len(end) >= 6 else (v6,), keep)

# ----------------------------------------------------------------------------- MAC
for i in range(8):
    b = [rs(HEX, 2) for _ in range(6)]
    if i % 2:
        b = [x.upper() for x in b]
    if i in (3, 7):
        mac = ".".join("".join(b[j : j + 2]) for j in (0, 2, 4)).lower()
        end = mac[-9:]
    else:
        sep = [":", "-", ":", None, "_", "-", ":", None][i]
        mac = sep.join(b)
        end = sep.join(b[3:])
    ctx = ["bare", "pre", "suf", "bare", "mid", "pre", "bare", "suf"][i]
    text, keep = place(mac, ctx, "" if ctx == "bare" else "+")
    add("mac", text, (mac, end), keep)

# ----------------------------------------------------------------------------- hostnames
HOSTS = [
    ("nas.home.arpa", "nas"),
    ("printer-2f.lan", "printer-2f"),
    ("db-primary.internal", "db-primary"),
    ("alice-macbook-pro.local", "alice-macbook-pro"),
    ("build07.corp", "build07"),
    ("wiki.intranet", "wiki"),
    ("fedora.localdomain", "fedora"),
    ("ip-10-0-1-23.ec2.internal", "ip-10-0-1-23"),
    ("ip-172-31-5-200.eu-west-1.compute.internal", "ip-172-31-5-200"),
    ("pihole.home.arpa", "pihole"),
    ("gitlab.acme.lan", "gitlab.acme"),
    ("vault-0.vault.internal", "vault-0"),
]
for i, (h, first) in enumerate(HOSTS):
    if i % 3 == 1:
        text, keep = f"ssh:{h}", ("ssh",)
    elif i % 3 == 2:
        text, keep = f"sync-{h}", ("sync",)
    else:
        text, keep = h, ()
    add("hostname", text, (h, first), keep)
for _ in range(3):
    rid = rs(LOW + DIG, 8)
    rn = f"runner-{rid}-project-{rng.randint(100, 99999)}-concurrent-{rng.randint(0, 9)}"
    add("hostname", rn, (rn, f"runner-{rid}"))
add("hostname", "runner-x8f2k3-project-1234-concurrent-0",
    ("runner-x8f2k3-project-1234-concurrent-0", "runner-x8f2k3"))  # fmt: skip
for name in ("web", "api-gateway", "rkd-ingest"):
    pod = f"{name}-{rs(K8S, 10)}-{rs(K8S, 5)}"
    add("hostname", pod, (pod, pod[-16:]))
win = f"DESKTOP-{rs(UP + DIG, 7)}"
add("hostname", f"{win}.think", (win,), ("think",))
gh = f"fv-az{rng.randint(100, 999)}-{rng.randint(100, 999)}"
add("hostname", gh, (gh,))

# ----------------------------------------------------------------------------- vendor tokens
B64U = B62 + "-_"


def token_case(cat: str, tok: str, ctx: str = "bare", sep: str = "-") -> None:
    tok = tok[:64]
    if ctx in ("suf", "mid") and sep in "-_" and any(c in "-_" for c in tok):
        sep = "."  # the token alphabet has - and _: a -suffix would be ambiguous
    text, keep = place(tok, ctx, sep)
    if len(text) > 64:
        text, keep = tok, ()
    add(cat, text, (tok, tail(tok)), keep)


ant_body = rs(B64U, 51)
token_case("anthropic_key", "sk-ant-api03-" + ant_body)  # truncated at exactly 64
token_case("anthropic_key", "sk-ant-api03-" + rs(B64U, 30), "pre", ":")
token_case("anthropic_key", "sk-ant-admin01-" + rs(B64U, 40), "suf", ".")
token_case("anthropic_key", "sk-ant-oat01-" + rs(B64U, 36), "bare")
token_case("anthropic_key", "sk-ant-api03-" + rs(B64U, 20), "mid", "+")

token_case("openai_key", "sk-" + mixed(20) + "T3BlbkFJ" + mixed(20))
token_case("openai_key", "sk-proj-" + rs(B64U, 56))
token_case("openai_key", "sk-proj-" + rs(B64U, 40), "pre", ":")
token_case("openai_key", "sk-svcacct-" + rs(B64U, 44), "suf", ".")
token_case("openai_key", "sk-" + mixed(48), "bare")

for i in range(5):
    k = rng.choice(["AKIA", "AKIA", "ASIA"]) + rs(UP + "234567", 16)
    token_case(
        "aws_access_key", k, ["bare", "pre", "suf", "mid", "bare"][i], [":", "-", "_", ".", ""][i]
    )
add("aws_access_key", "AKIAIOSFODNN7EXAMPLE", ("AKIAIOSFODNN7EXAMPLE", "ODNN7EXAMPLE"))

for i in range(4):
    sk = mixed(18) + rng.choice("+" + B62) + mixed(21)
    if i == 0:
        add("aws_secret_key", sk, (sk, tail(sk)))
    elif i == 1:
        add(
            "aws_secret_key",
            f"aws_secret_access_key:{sk}",
            (sk, tail(sk)),
            ("aws_secret_access_key",),
        )
    elif i == 2:
        ak = "AKIA" + rs(UP + "234567", 16)
        add("aws_secret_key", f"{ak}:{sk}", (ak, sk, tail(sk)))
    else:
        add("aws_secret_key", f"s3-sync.{sk}", (sk, tail(sk)), ("s3-sync",))

token_case("github_token", "ghp_" + rs(B62, 36))
token_case("github_token", "gho_" + rs(B62, 36), "pre", ":")
token_case("github_token", "ghs_" + rs(B62, 36), "suf", ".")
token_case("github_token", "github_pat_11A" + rs(UP + DIG, 19) + "_" + rs(B62, 59))
token_case("github_token", "ghu_" + rs(B62, 36), "mid", "-")

token_case("gitlab_token", "glpat-" + rs(B64U, 20))
token_case("gitlab_token", "glpat-" + rs(B64U, 20), "pre", ":")
token_case("gitlab_token", "glrt-" + rs(B64U, 20), "suf", "_")
token_case("gitlab_token", "glptt-" + rs(HEX, 40))
token_case("gitlab_token", "gldt-" + rs(B64U, 20), "mid", ".")

token_case("slack_token", f"xoxb-{rs(DIG, 12)}-{rs(DIG, 13)}-{rs(B62, 24)}")
token_case("slack_token", f"xoxp-{rs(DIG, 11)}-{rs(DIG, 12)}-{rs(DIG, 13)}-{rs(HEX, 32)}")
token_case("slack_token", f"xoxb-{rs(DIG, 10)}-{rs(DIG, 11)}-{rs(B62, 24)}", "pre", ":")
token_case("slack_token", f"xapp-1-A{rs(UP + DIG, 10)}-{rs(DIG, 13)}-{rs(HEX, 64)}")

token_case("stripe_key", "sk_live_" + rs(B62, 24))
token_case("stripe_key", "sk_live_51" + rs(B62, 54))
token_case("stripe_key", "rk_live_" + rs(B62, 24), "pre", ":")
token_case("stripe_key", "sk_test_" + rs(B62, 24), "suf", "-")
token_case("stripe_key", "whsec_" + rs(B62, 32), "bare")

token_case("google_api_key", "AIza" + rs(B64U, 35))
token_case("google_api_key", "AIzaSy" + rs(B64U, 33), "pre", ":")
token_case("google_api_key", "AIza" + rs(B64U, 35), "suf", ".")
token_case("google_api_key", "ya29." + rs(B64U, 80))

token_case("huggingface_token", "hf_" + rs(LOW + UP, 34))
token_case("huggingface_token", "hf_" + rs(LOW + UP, 34), "pre", ":")
token_case("huggingface_token", "hf_" + rs(LOW + UP, 34), "suf", "-")
token_case("huggingface_token", "hf_" + rs(LOW + UP, 34), "mid", ".")


# ----------------------------------------------------------------------------- JWT
def b64u(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


JWTS = [
    ({"alg": "HS256"}, {"sub": "42"}, 20),
    ({"alg": "HS256"}, {"sub": "alice"}, 40),  # truncated signature
    ({"alg": "none"}, {"uid": 7}, 0),  # unsigned: ends with '.'
    ({"alg": "RS256"}, {"exp": 1733220000}, 30),
    ({"alg": "HS256"}, {"sub": "u_91"}, 12),
]
for i, (h, p, siglen) in enumerate(JWTS):
    payload = b64u(p)
    jwt = f"{b64u(h)}.{payload}.{rs(B64U, siglen)}"
    if i == 3:
        text, keep = f"auth:{jwt}"[:64], ("auth",)
        jwt = text[5:]
    elif i == 4:
        text, keep = f"{jwt}:expired", ("expired",)
    else:
        text, keep = jwt[:64], ()
        jwt = text
    add("jwt", text, (jwt, payload, tail(jwt)) if siglen else (jwt, payload), keep)

# ----------------------------------------------------------------------------- bearer
b32 = rs(HEX, 32)
add("bearer", b32, (b32, tail(b32)))
b32u = rs(HEX, 32).upper()
add("bearer", f"token:{b32u}", (b32u, tail(b32u)), ("token",))
b64 = rs(HEX, 64)
add("bearer", b64, (b64, tail(b64)))
h40 = rs(HEX, 40)
add("bearer", f"bearer-{h40}", (h40, tail(h40)), ("bearer",))
h40 = rs(HEX, 40)
add("bearer", f"apikey:{h40}", (h40, tail(h40)), ("apikey",))
b32 = rs(HEX, 32)
add("bearer", f"think-{b32}", (b32, tail(b32)), ("think",))
b32 = rs(HEX, 32)
add("bearer", f"{b32}.cache", (b32, tail(b32)), ("cache",))
hx = rs(HEX, 64)
add("bearer", hx.upper(), (hx.upper(), tail(hx.upper())))
bt = mixed(40)
add("bearer", f"bearer:{bt}", (bt, tail(bt)), ("bearer",))
bt = mixed(32)
add("bearer", bt, (bt, tail(bt)))
bt = rs(HEX, 32)
add("bearer", f"export:{bt}:retry", (bt, tail(bt)), ("export", "retry"))

# ----------------------------------------------------------------------------- user:password
CREDS = [
    ("alice", "S3cr3tPassw0rd"),
    ("admin", "Passw0rd2024"),
    ("svc_rkd", "4SdwSO1E3Iy6mInI"),
    ("postgres", "pg-Pass_2024"),
    ("deploy", "Hunter2hunter2"),
    ("root", mixed(14)),
    ("j.doe", "Winter2024.x"),
    ("ci-bot", mixed(18)),
    ("bob", "Correct-Horse-42"),
]
for i, (u, p) in enumerate(CREDS):
    pair = f"{u}:{p}"
    if i in (2, 6):
        text = f"login+{pair}"
        add("url_credentials", text, (pair, p), ("login",))
    else:
        add("url_credentials", pair, (pair, p))

# ----------------------------------------------------------------------------- key_assignment
KA = [
    ("password", "Sommer2024x"),
    ("DB_PASSWORD", "correct-horse-battery-staple"),
    ("api_key", mixed(24)),
    ("client_secret", rs(HEX, 34)),
    ("auth_token", mixed(20)),
    ("smtp.password", "s3nd-me-mail"),
    ("SECRET_KEY", mixed(24)),
    ("pwd", "letmein99"),
    ("apikey", mixed(22)),
    ("private_key", mixed(30)),
]
for i, (k, v) in enumerate(KA):
    text = f"{k}:{v}"
    sec = (v, tail(v)) if len(v) > 12 else (v,)
    if i == 4:
        text = f"think.{k}:{v}"
        add("key_assignment", text, sec, ("think", k))
    else:
        add("key_assignment", text, sec, (k,))

# ----------------------------------------------------------------------------- cli flags
CLI = [
    ("mysql:-uroot:-p", "Hunter2024", "", ("mysql", "-uroot")),
    ("login--password:", "CorrectHorse42", "", ("login",)),
    ("deploy--token+", mixed(20), "", ("deploy",)),
    ("backup-tool--api-key:", mixed(20), "", ("backup-tool",)),
    ("rkd.login--passwd.", "Tr0ub4dor3x", "--profile:quick", ("rkd.login", "--profile:quick")),
    ("psql--secret_", mixed(16), "", ("psql",)),
]
for pre, v, suf, keep in CLI:
    text = pre + v + suf
    add("cli_password_flag", text, (v, tail(v)) if len(v) > 12 else (v,), keep)

# ----------------------------------------------------------------------------- high entropy
for i in range(12):
    n = [12, 13, 14, 15, 16, 17, 18, 19, 20, 12, 16, 20][i]
    pw = mixed(n)
    if i == 10:
        pw = mixed(7) + "_" + mixed(8)
    if i == 11:
        pw = mixed(9) + "-" + mixed(10)
    ctx = ["bare", "pre", "suf", "mid"][i % 4]
    text, keep = place(pw, ctx, ["-", ":", ".", "+"][i % 4] if ctx != "bare" else "")
    add("high_entropy", text, (pw, tail(pw)), keep)

# ----------------------------------------------------------------------------- exactly 64 chars
num = luhn_complete("5", 16)
card = "_".join(card_groups(num))
text, keep = fill64(card, ("think",))
add("credit_card", text, (card, card[-9:]), keep)
ib = iban("DE")
ibs = "-".join(ib[j : j + 4] for j in range(0, len(ib), 4))
text, keep = fill64(ibs, ("export",), ":")
add("iban", text, (ibs, ibs[-7:]), keep)
ph = "+44.7700." + rs(DIG, 6)
text, keep = fill64(ph, ("notify", "sms"), "_")
add("phone", text, (ph, ph[-6:]), keep)
ssn = f"{rng.randint(100, 599)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
text, keep = fill64(ssn, ("verify",), ".")
add("ssn", text, (ssn, ssn[-7:]), keep)
host = "build-agent-" + rs(LOW + DIG, 4) + ".home.arpa"
text, keep = fill64(host, ("ssh",), ":")
add("hostname", text, (host, host.split(".")[0]), keep)
pw = mixed(16)
text, keep = fill64(pw, ("gigathink", "profile"), "-")
add("high_entropy", text, (pw, tail(pw)), keep)
k = "AKIA" + rs(UP + "234567", 16)
text, keep = fill64(k, ("s3", "upload"), ".")
add("aws_access_key", text, (k, tail(k)), keep)
hx = rs(HEX, 32)
text, keep = fill64(hx, ("cache", "warm"), "_")
add("bearer", text, (hx, tail(hx)), keep)

# ----------------------------------------------------------------------------- KEEP
KEEP_VALUES = """
claude-3-5-sonnet-20241022 claude-3-opus-20240229 claude-sonnet-4-20250514 claude-3-haiku-20240307
claude-3-5-haiku-20241022 claude-3-7-sonnet-20250219 claude-opus-4-1-20250805 claude-2.1
claude-instant-1.2 gpt-4o-2024-08-06 gpt-4o-mini-2024-07-18 o1-preview-2024-09-12 o1-mini
gpt-4-turbo-2024-04-09 gpt-3.5-turbo-0125 gpt-4-0613 chatgpt-4o-latest o3-mini-2025-01-31
text-embedding-3-large gemini-1.5-pro-002 gemini-2.0-flash-exp gemini-1.5-flash-8b-exp-0924
gemini-exp-1206 text-embedding-004 llama3.1:70b-instruct-q4_K_M qwen2.5-coder:32b
deepseek-r1:14b mistral:7b-instruct-v0.3-q5_K_M phi3:3.8b-mini-128k-instruct-q4_0
nomic-embed-text:latest gemma2:27b codellama:13b-python mistral-large-2411 codestral-2405
open-mixtral-8x22b ministral-8b-2410 command-r-plus-08-2024 command-r7b-12-2024
embed-english-v3.0 anthropic.claude-3-haiku-20240307-v1:0
us.anthropic.claude-3-5-sonnet-20241022-v2:0 meta.llama3-1-70b-instruct-v1:0
cohere.command-r-plus-v1:0 amazon.titan-text-express-v1 mistral.mistral-large-2407-v1:0
llama-3.3-70b-versatile mixtral-8x7b-32768 gemma2-9b-it grok-2-1212 deepseek-chat
Meta-Llama-3.1-8B-Instruct Qwen2.5-72B-Instruct Mixtral-8x7B-Instruct-v0.1
Phi-3-mini-4k-instruct models--meta-llama--Llama-3.1-8B-Instruct
Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf gpt4o-prod-eastus2 Qwen2ForCausalLM GPT2LMHeadModel
T5ForConditionalGeneration
1.2.3 v2.0.0-rc.1 0.23.0+local 2024.12.01 1.0.0-beta.2+exp.sha.5114f85 3.11.9 cp311
10.0.19045.5247 131.0.6778.85 6.8.0-49-generic 12.4.1 torch-2.5.1+cu124 v20.18.1 go1.23.4
1.83.0-nightly 2.0.0a1 1.26.4.post1 0.6.3.dev12 rkd-0.1.0 py3.11
E0425 ERR_CONNECTION_RESET HTTP_429 rate_limit_exceeded ECONNREFUSED ETIMEDOUT EADDRINUSE
SIGKILL exit:137 overloaded_error invalid_api_key context_length_exceeded 0x80070005
CUDA_ERROR_OUT_OF_MEMORY errno:111 grpc:UNAVAILABLE SQLSTATE:40001 ORA-12541 TS2345
authentication_error
think gigathink deep-research rk-core.think.v2 plan:execute laserlogic proofguard
brutalhonesty tool:web_search mcp:filesystem.read_file profile:balanced paranoid
password-reset token_count:812 max_tokens:4096 rotate-secret docker:-p:8080:80
20241022 2024-12-03T10:15:00 2024-12-03T10:15:00+01:00 10:15:00 1733220000 1733220000123
20241203101500 duration_ms:2500 bytes:104857600 port:8443 8080 tokens:128000
5114f85 commit:9fceb02 a1b2c3d4e5f6 span:00f067aa0ba902b7
sm_90 x86_64 aarch64 x86_64-unknown-linux-gnu darwin-arm64 win_amd64
manylinux_2_17_x86_64 cu121
""".split()  # noqa: SIM905
for v in KEEP_VALUES:
    add("keep", v, (), (v,))
for _ in range(4):
    u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    add("keep", u, (), (u,))
u = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
add("keep", u, (), (u,))
add("keep", "123e4567-e89b-12d3-a456-426614174000", (), ("123e4567-e89b-12d3-a456-426614174000",))
u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
add("keep", f"session:{u}", (), (f"session:{u}",))
u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
add("keep", f"run-{u}", (), (f"run-{u}",))
# model ids and versions inside command-like values
for v in ("think:claude-3-5-sonnet-20241022", "gigathink.gpt-4o-2024-08-06",
          "deep-research+gemini-1.5-pro-002", "bench-llama3.1:70b-instruct-q4_K_M",
          "rkd-0.1.0-py3-none-any", "compare:o1-preview-2024-09-12:v2"):  # fmt: skip
    add("keep", v, (), (v,))
# keep values at exactly 64 characters
for v in ("deep-research:us.anthropic.claude-3-5-sonnet-20241022-v2:0:retry",
          "models--meta-llama--Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf.part",
          "run:claude-3-5-sonnet-20241022.2024-12-03T10:15:00Z.profile.deep"):  # fmt: skip
    assert len(v) == 64, (len(v), v)
    add("keep", v, (), (v,))


# ============================================================================= self-check
def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(s: str) -> bool:
    c = re.sub(r"[_.:-]", "", s).upper()
    return int("".join(str(int(x, 36)) for x in c[4:] + c[:4])) % 97 == 1


def _problems() -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, case in enumerate(CASES):
        where = f"case {i} ({case.category}) {case.text!r}"
        if case.category not in CATEGORIES:
            problems.append(f"{where}: unknown category")
        if not IDENT.fullmatch(case.text):
            problems.append(f"{where}: not an identifier (len {len(case.text)})")
        if case.text in seen:
            problems.append(f"{where}: duplicate")
        seen.add(case.text)
        if case.category == "keep":
            if case.secrets or not case.keep:
                problems.append(f"{where}: keep case needs keeps and no secrets")
        elif not case.secrets:
            problems.append(f"{where}: no secrets")
        for s in (*case.secrets, *case.keep):
            if not s or s not in case.text:
                problems.append(f"{where}: {s!r} not in text")
        if set(case.secrets) & set(case.keep):
            problems.append(f"{where}: secrets and keeps overlap")
        redacted = case.text
        for s in sorted(case.secrets, key=len, reverse=True):
            redacted = redacted.replace(s, "\0")
        for k in case.keep:
            if k not in redacted or any(k in s for s in case.secrets):
                problems.append(f"{where}: keep {k!r} lies inside a secret")
        if case.category == "credit_card":
            digits = re.sub(r"\D", "", case.secrets[0])
            if not (_luhn_ok(digits) and len(digits) in (15, 16)):
                problems.append(f"{where}: bad card")
        if case.category == "iban" and not _iban_ok(case.secrets[0]):
            problems.append(f"{where}: bad IBAN")
        if case.category == "ssn":
            d = re.sub(r"\D", "", case.secrets[0])
            if (
                len(d) != 9
                or d[:3] in ("000", "666")
                or d[0] == "9"
                or d[3:5] == "00"
                or d[5:] == "0000"
            ):
                problems.append(f"{where}: bad SSN")
    return problems


if __name__ == "__main__":
    import sys
    from collections import Counter

    counts = Counter(c.category for c in CASES)
    for cat in CATEGORIES:
        if counts[cat]:
            print(f"{cat:20} {counts[cat]:4}")
    print(
        f"{'total':20} {len(CASES):4}  (secret/PII {len(CASES) - counts['keep']}, keep {counts['keep']})"
    )
    problems = _problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print("ok: all texts are identifiers <= 64 chars, secrets/keeps occur and are disjoint, "
          "cards pass Luhn, IBANs mod-97, SSNs valid")  # fmt: skip
