"""Identifier-shaped privacy corpus, HELD-OUT set (do NOT show to the detector engineer).

Every ``text`` is a value the telemetry schema accepts in an identifier field: it matches
``[A-Za-z0-9][A-Za-z0-9_.:+-]*`` and is at most 64 characters long (no spaces, ``/``, ``@``,
quotes, ``=``, newlines). Free text cannot be stored, so what is left to catch is private data
*shaped like an identifier*, e.g. sent as ``CommandEvent(command=...)`` or ``model=...``.
This is the held-out twin of ``ident_corpus.py``: exactly the same rules, but another seed,
other hand-picked examples and other shapes/positions. Keep it away from detector tuning.

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
except ImportError:  # run as ``python tests/ident_corpus_heldout.py``
    from privacy_corpus import CATEGORIES, Case

IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
SEED = 7324626933
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


# ----------------------------------------------------------------------------- helpers
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


def nanp() -> tuple[str, str, str]:
    return (
        f"{rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}",
        f"{rng.randint(2, 9)}{rs(DIG, 2)}",
        rs(DIG, 4),
    )


def hexg(n: int = 4) -> str:
    return rng.choice("123456789abcdef") + rs(HEX, n - 1)


def b64u(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ============================================================================= HELD-OUT DATA
# Other seed, other hand-picked examples, other countries/issuers mix, other positions
# (prefix / suffix / middle / model-like contexts / exactly 64 characters).


def place(secret: str, ctx: str, sep: str) -> tuple[str, tuple[str, ...]]:  # noqa: F811
    """Put a secret in a command-like value: ctx 'pre', 'suf', 'mid', 'model' or 'bare'."""
    pre, suf = {
        "bare": ("", ""),
        "pre": (
            rng.choice(["gigathink", "checkout", "invoice", "refund", "ingest", "onboard"]),
            "",
        ),
        "suf": ("", rng.choice(["timeout", "declined", "v3", "queued", "stale"])),
        "mid": (
            rng.choice(["laserlogic", "step", "batch", "worker"]),
            rng.choice(["attempt3", "final", "err"]),
        ),
        "model": (rng.choice(["gpt-4o-mini", "claude-3-haiku", "llama3.2", "mistral-small"]), ""),
    }[ctx]
    text = (pre + sep if pre else "") + secret + (sep + suf if suf else "")
    return text, tuple(x for x in (pre, suf) if x)


CTXS = ("pre", "suf", "mid", "model", "bare")

# ----------------------------------------------------------------------------- credit cards
add("credit_card", "deploy-4011_4923_9875_7086", ("4011_4923_9875_7086", "9875_7086"), ("deploy",))
add("credit_card", "5500:0000:0000:0004", ("5500:0000:0000:0004", "0000:0004"))
add("credit_card", "3782-822463-10005.retry", ("3782-822463-10005", "822463-10005"), ("retry",))
ISSUERS = [("4", 16), ("52", 16), ("54", 16), ("2300", 16), ("2599", 16), ("37", 15),
           ("34", 15), ("644", 16), ("6011", 16), ("65", 16), ("4", 16), ("51", 16), ("649", 16),
           ("37", 15)]  # fmt: skip
for i, (prefix, length) in enumerate(ISSUERS):
    num = luhn_complete(prefix, length)
    sep = [":", ".", "", "_", "-", ".", ":", "_", "", "-", ".", "_", ":", ""][i]
    g = card_groups(num)
    card = sep.join(g)
    last2 = sep.join(g[-2:]) if sep else num[-8:]
    ctx = CTXS[(i + 2) % 5]
    text, keep = place(card, ctx, "" if ctx == "bare" else rng.choice(["-", ":", "_", "+"]))
    add("credit_card", text, (card, last2), keep)

# ----------------------------------------------------------------------------- IBAN
IBAN_SPECS = {
    "CH": "5n12c", "PL": "24n", "PT": "21n", "IE": "4a14n", "FR": "10n11c2n", "IT": "1a10n12c",
    "GB": "4a14n", "NL": "4a10n", "ES": "20n", "DE": "18n", "BE": "12n", "AT": "16n",
}  # fmt: skip
ibs = "ES43_8053_0898_8120_5340_3588"  # the issue's example, other separator and position
add("iban", f"think:{ibs}", (ibs, ibs[-9:]), ("think",))
for i, cc in enumerate(
    ["CH", "PL", "PT", "IE", "FR", "IT", "GB", "NL", "DE", "BE", "AT", "ES", "PL"]
):
    ib = iban(cc)
    lower = i in (3, 7, 10)
    sep = [":", "_", "", ".", "-", ":", "_", "", "-", ".", "_", ":", "-"][i]
    groups = [ib[j : j + 4] for j in range(0, len(ib), 4)]
    txt = sep.join(groups) if sep else ib
    last2 = sep.join(groups[-2:]) if sep else ib[-8:]
    if lower:
        txt, last2 = txt.lower(), last2.lower()
    ctx = CTXS[i % 5]
    text, keep = place(txt, ctx, "" if ctx == "bare" else rng.choice(["-", ":", "+"]))
    if len(text) > 64:
        text, keep = txt, ()
    add("iban", text, (txt, last2), keep)

# ----------------------------------------------------------------------------- SSN
add("ssn", "verify:611.34.8541", ("611.34.8541", "34.8541"), ("verify",))
add("ssn", "078_05_1120-kyc", ("078_05_1120", "05_1120"), ("kyc",))
for i in range(9):
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    grp, ser = rng.randint(1, 99), rng.randint(1, 9999)
    sep = [":", "_", ".", "-", ":", "_", ".", "-", "_"][i]
    s = f"{area:03d}{sep}{grp:02d}{sep}{ser:04d}"
    ctx = ["mid", "bare", "suf", "pre", "model", "pre", "mid", "suf", "bare"][i]
    text, keep = place(
        s, ctx, "" if ctx == "bare" else ("+" if i % 2 else "-") if sep != "-" else ":"
    )
    add("ssn", text, (s, f"{grp:02d}{sep}{ser:04d}"), keep)

# ----------------------------------------------------------------------------- phone
add("phone", "7324626933-callback", ("7324626933", "4626933"), ("callback",))
add("phone", "sms:+44-20-7946-0958:queued", ("+44-20-7946-0958", "7946-0958"), ("sms", "queued"))
a, e, l_ = nanp()
PHONES: list[tuple[str, ...]] = [("1", a, e, l_)]
a, e, l_ = nanp()
PHONES += [("001", a, e, l_)]
a, e, l_ = nanp()
PHONES += [(a + e + l_,)]  # bare 10 digits
a, e, l_ = nanp()
PHONES += [("1" + a + e + l_,)]  # bare 11 digits with leading 1
PHONES += [("+81", "90", rs(DIG, 4), rs(DIG, 4)), ("090", rs(DIG, 4), rs(DIG, 4)),
           ("+61", "4" + rs(DIG, 2), rs(DIG, 3), rs(DIG, 3)), ("04" + rs(DIG, 2), rs(DIG, 3), rs(DIG, 3)),
           ("+55", "11", "9" + rs(DIG, 4), rs(DIG, 4)), ("0033", "7", rs(DIG, 2), rs(DIG, 2), rs(DIG, 2), rs(DIG, 2)),
           ("+39", "3" + rs(DIG, 2), rs(DIG, 7)), ("+44", "7700", rs(DIG, 6)),
           ("0" + rs("123456789", 1) + rs(DIG, 8),),  # bare national 10 digits, trunk 0
           ("07" + rs("123456789", 1) + rs(DIG, 8),),  # bare UK mobile 11 digits
           ("+49", "170", rs(DIG, 7)), ("0211", rs(DIG, 7)), ("+353", "87", rs(DIG, 3), rs(DIG, 4)),
           ("+14155552671",), ("+91", rs("6789", 1) + rs(DIG, 4), rs(DIG, 5))]  # fmt: skip
for i, groups in enumerate(PHONES):
    sep = [
        ":",
        "_",
        "",
        "",
        ".",
        "-",
        ":",
        "_",
        "-",
        ".",
        "_",
        "-",
        "",
        "",
        ":",
        "-",
        ".",
        "",
        "_",
    ][i]
    ph = sep.join(groups)
    last = sep.join(groups[-2:]) if sep and len(groups) > 2 else groups[-1] if sep else ph[-7:]
    if ph.startswith("+"):
        pre = rng.choice(["sms", "otp", "callback", "support", "pager"])
        sufx = rng.choice(["", "", ".sent", "_failed"])
        text, keep = (
            f"{pre}{rng.choice([':', '-', '.'])}{ph}{sufx}",
            (pre,) + ((sufx[1:],) if sufx else ()),
        )
    else:
        ctx = CTXS[(i + 1) % 5]
        text, keep = place(ph, ctx, "" if ctx == "bare" else ("-" if sep not in ("-", "") else ":"))
    add("phone", text, (ph, last), keep)

# ----------------------------------------------------------------------------- IPv4
add("ipv4", "db:10.1.2.3:5432:timeout", ("10.1.2.3",), ("db", "5432:timeout"))
for i in range(8):
    first = [172, 10, 192, 81, 198, 3, 100, 91][i]
    ip = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    form = i % 4
    if form == 0:
        text, keep = f"{ip}.unreachable", ("unreachable",)
    elif form == 1:
        text, keep = f"proxy-{ip}:{rng.choice([3128, 1080, 8443])}", ("proxy",)
    elif form == 2:
        text, keep = ip, ()
    else:
        text, keep = f"gigathink:{ip}:retry", ("gigathink", "retry")
    add("ipv4", text, (ip,), keep)

# ----------------------------------------------------------------------------- IPv6
V6 = [
    f"2001:DB8:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}".upper(),
    f"fe80::{hexg()}:{hexg()}:{hexg(3)}",
    f"2a02:{hexg()}:{hexg()}:{hexg()}::{hexg()}",
    f"fdc4:{hexg()}:{hexg()}::{hexg(3)}:{hexg()}",
    f"2607:f8b0:{hexg()}:{hexg()}::{hexg()}",
    f"2001:db8:0:0:{hexg()}:{hexg()}:0:{hexg()}",
    f"fe80::{hexg()}:{hexg()}:{hexg()}:{hexg()}",
    f"2804:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}:{hexg()}",
]
for i, v6 in enumerate(V6):
    end = ":".join(v6.split(":")[-2:])
    if i % 3 == 0:
        text, keep = f"peer.{v6}", ("peer",)
    elif i % 3 == 1:
        text, keep = f"{v6}-EADDRINUSE", ("EADDRINUSE",)
    else:
        text, keep = v6, ()
    add("ipv6", text, (v6, end) if len(end) >= 6 else (v6,), keep)
add("ipv6", "listen:::ffff:10.20.30.40", ("::ffff:10.20.30.40", "10.20.30.40"), ("listen",))

# ----------------------------------------------------------------------------- MAC
for i in range(9):
    b = [rs(HEX, 2) for _ in range(6)]
    if i % 3 == 0:
        b = [x.upper() for x in b]
    if i in (2, 6):
        mac = ".".join("".join(b[j : j + 2]) for j in (0, 2, 4))
        end = mac[-9:]
    else:
        sep = ["_", "-", None, ":", "_", "-", None, ":", "-"][i]
        mac = sep.join(b)
        end = sep.join(b[3:])
    ctx = CTXS[(i + 3) % 5]
    text, keep = place(mac, ctx, "" if ctx == "bare" else rng.choice(["+", ".", "-"]))
    add("mac", text, (mac, end), keep)

# ----------------------------------------------------------------------------- hostnames
HOSTS = [
    ("jellyfin.home.arpa", "jellyfin"),
    ("router.lan", "router"),
    ("k8s-master-01.internal", "k8s-master-01"),
    ("bobs-iphone.local", "bobs-iphone"),
    ("ci-runner-3.corp", "ci-runner-3"),
    ("hr-portal.intranet", "hr-portal"),
    ("raspberrypi.localdomain", "raspberrypi"),
    ("ip-192-168-0-17.us-west-2.compute.internal", "ip-192-168-0-17"),
    ("ip-10-20-3-44.ec2.internal", "ip-10-20-3-44"),
    ("instance-7.c.acme-prod.internal", "instance-7"),
    ("homeassistant.local", "homeassistant"),
    ("Marias-MacBook-Air.local", "Marias-MacBook-Air"),
    ("printer.office.lan", "printer.office"),
]
for i, (h, first) in enumerate(HOSTS):
    if i % 4 == 0:
        text, keep = f"{h}:8123", ()
    elif i % 4 == 1:
        text, keep = f"mount.{h}", ("mount",)
    elif i % 4 == 2:
        text, keep = f"deep-research:{h}", ("deep-research",)
    else:
        text, keep = h, ()
    add("hostname", text, (h, first), keep)
for i in range(3):
    rid = rs(LOW + DIG, rng.choice([8, 8, 6]))
    rn = f"runner-{rid}-project-{rng.randint(10, 999999)}-concurrent-{rng.randint(0, 20)}"
    text, keep = [(rn, ()), (f"ci:{rn}", ("ci",)), (f"{rn}.build", ("build",))][i]
    add("hostname", text, (rn, f"runner-{rid}"), keep)
for name, ctx in (("frontend", ""), ("payments-worker", "ingest:"), ("redis-cache", "")):
    pod = f"{name}-{rs(K8S, 9)}-{rs(K8S, 5)}"
    add("hostname", ctx + pod, (pod, pod[-15:]), (ctx[:-1],) if ctx else ())
lap = f"LAPTOP-{rs(UP + DIG, 7)}"
add("hostname", lap, (lap,))
desk = f"DESKTOP-{rs(UP + DIG, 7)}"
add("hostname", f"think:{desk}:v2", (desk,), ("think", "v2"))
gh = f"fv-az{rng.randint(100, 999)}-{rng.randint(10, 999)}"
add("hostname", f"gha.{gh}", (gh,), ("gha",))

# ----------------------------------------------------------------------------- vendor tokens
B64U = B62 + "-_"


def token_case(cat: str, tok: str, ctx: str = "bare", sep: str = "-") -> None:
    tok = tok[:64]
    if ctx in ("suf", "mid") and sep in "-_" and any(c in "-_" for c in tok):
        sep = "."  # the token alphabet has - and _: a -suffix would be ambiguous
    text, keep = place(tok, ctx, sep)
    if len(text) > 64:  # keep the context, truncate the token so the value is exactly 64
        short = tok[: len(tok) - (len(text) - 64)]
        text, tok = text.replace(tok, short), short
    add(cat, text, (tok, tail(tok)), keep)


token_case("anthropic_key", "sk-ant-api03-" + rs(B64U, 93) + "AA", "pre", ":")  # 64 with context
token_case("anthropic_key", "sk-ant-api03-" + rs(B64U, 44), "suf", "_")
token_case("anthropic_key", "sk-ant-api03-" + rs(B64U, 26), "model", ":")
token_case("anthropic_key", "sk-ant-admin01-" + rs(B64U, 49))
token_case("anthropic_key", "sk-ant-api03-" + rs(B64U, 33), "mid", ".")

token_case("openai_key", "sk-proj-" + rs(B64U, 120), "pre", ":")
token_case("openai_key", "sk-" + mixed(48), "suf", ".")
token_case("openai_key", "sk-" + mixed(20) + "T3BlbkFJ" + mixed(20), "model", "+")
token_case("openai_key", "sk-svcacct-" + rs(B64U, 53))
token_case("openai_key", "sk-None-" + rs(B64U, 40), "mid", ":")

for i in range(5):
    k = ["AKIA", "ASIA", "AKIA", "AKIA", "ASIA"][i] + rs(UP + "234567", 16)
    token_case("aws_access_key", k, CTXS[i], ["+", ":", "-", "_", ""][i])

for i in range(4):
    sk = mixed(11) + rng.choice("+" + B62) + mixed(28)
    if i == 0:
        add("aws_secret_key", f"{sk}.sync", (sk, tail(sk)), ("sync",))
    elif i == 1:
        add(
            "aws_secret_key",
            f"AWS_SECRET_ACCESS_KEY:{sk}",
            (sk, tail(sk)),
            ("AWS_SECRET_ACCESS_KEY",),
        )
    elif i == 2:
        ak = "ASIA" + rs(UP + "234567", 16)
        add("aws_secret_key", f"{ak}.{sk}", (ak, sk, tail(sk)))
    else:
        add("aws_secret_key", sk, (sk, tail(sk)))

token_case("github_token", "ghp_" + rs(B62, 36), "mid", ":")
token_case("github_token", "ghr_" + rs(B62, 36))
token_case("github_token", "github_pat_11B" + rs(UP + DIG, 19) + "_" + rs(B62, 59), "pre", "-")
token_case("github_token", "gho_" + rs(B62, 36), "model", ":")
token_case("github_token", "ghs_" + rs(B62, 36), "suf", "+")

token_case("gitlab_token", "glpat-" + rs(B64U, 20), "suf", ".")
token_case("gitlab_token", "glpat-" + rs(B64U, 20), "mid", "+")
token_case("gitlab_token", "glptt-" + rs(HEX, 40), "pre", ":")
token_case("gitlab_token", "glrt-" + rs(B64U, 20))

token_case("slack_token", f"xoxa-2-{rs(DIG, 12)}-{rs(DIG, 13)}-{rs(HEX, 64)}")
token_case("slack_token", f"xoxb-{rs(DIG, 11)}-{rs(DIG, 12)}-{rs(B62, 24)}", "suf", ".")
token_case("slack_token", f"xoxr-{rs(DIG, 10)}-{rs(DIG, 11)}-{rs(B62, 24)}")
token_case(
    "slack_token", f"xoxp-{rs(DIG, 10)}-{rs(DIG, 11)}-{rs(DIG, 12)}-{rs(HEX, 32)}", "pre", ":"
)

token_case("stripe_key", "sk_test_51" + rs(B62, 97), "pre", ":")
token_case("stripe_key", "rk_test_" + rs(B62, 24), "mid", "-")
token_case("stripe_key", "sk_live_" + rs(B62, 24), "model", ":")
token_case("stripe_key", "whsec_" + rs(B62, 32), "suf", ".")

token_case("google_api_key", "AIzaSy" + rs(B64U, 33), "mid", ".")
token_case("google_api_key", "AIza" + rs(B64U, 35), "model", ":")
token_case("google_api_key", "AIza" + rs(B64U, 35))
token_case("google_api_key", "ya29.a0" + rs(B64U, 120), "pre", ":")

token_case("huggingface_token", "hf_" + rs(LOW + UP, 34), "model", ":")
token_case("huggingface_token", "hf_" + rs(LOW + UP, 34))
token_case("huggingface_token", "hf_" + rs(LOW + UP, 34), "pre", "+")
token_case("huggingface_token", "hf_" + rs(LOW + UP, 34), "suf", ":")

# ----------------------------------------------------------------------------- JWT
JWTS = [
    ({"alg": "ES256"}, {"sub": "9"}, 24, "bare"),
    ({"alg": "HS256"}, {"uid": 1337}, 50, "pre"),  # truncated to 64 with context
    ({"alg": "none"}, {"sub": "bob"}, 0, "suf"),
    ({"alg": "HS512"}, {"sid": "x1"}, 18, "mid"),
    ({"alg": "RS256"}, {"iat": 1736121599}, 40, "bare"),  # truncated to 64
]
for h, p, siglen, ctx in JWTS:
    payload = b64u(p)
    jwt = f"{b64u(h)}.{payload}.{rs(B64U, siglen)}"
    sep = {"pre": ":", "suf": "+", "mid": "+", "bare": ""}[ctx]
    text, keep = place(jwt, ctx, sep)
    if len(text) > 64:  # truncated at the field limit, context kept
        short = jwt[: len(jwt) - (len(text) - 64)]
        text, jwt = text.replace(jwt, short), short
    add("jwt", text, (jwt, payload, tail(jwt)) if siglen else (jwt, payload), keep)

# ----------------------------------------------------------------------------- bearer
hx = rs(HEX, 32).upper()
add("bearer", hx, (hx, tail(hx)))
hx = rs(HEX, 32)
add("bearer", f"job-{hx}-retry", (hx, tail(hx)), ("job", "retry"))
hx = rs(HEX, 64)
add("bearer", hx, (hx, tail(hx)))
hx = rs(HEX, 32)
add("bearer", f"gigathink:{hx}", (hx, tail(hx)), ("gigathink",))
hx = rs(HEX, 40)
add("bearer", f"token.{hx}", (hx, tail(hx)), ("token",))
hx = rs(HEX, 40)
add("bearer", f"pat_{hx}", (hx, tail(hx)), ("pat",))
hx = rs(HEX, 40)
add("bearer", f"secret-{hx}", (hx, tail(hx)), ("secret",))
hx = rs(HEX, 64).upper()
add("bearer", hx, (hx, tail(hx)))
bt = mixed(43)
add("bearer", f"auth+{bt}", (bt, tail(bt)), ("auth",))
bt = mixed(36)
add("bearer", f"{bt}.expired", (bt, tail(bt)), ("expired",))
hx = rs(HEX, 32)
add("bearer", f"{hx}:think", (hx, tail(hx)), ("think",))

# ----------------------------------------------------------------------------- user:password
CREDS = [
    ("maria.garcia", "Contrasena2024"),
    ("svc-backup", mixed(16)),
    ("dbadmin", "Summer24Summer"),
    ("root", "Tr0ub4dor-3"),
    ("rkd_ingest", mixed(20)),
    ("jenkins", "J3nkins.Build"),
    ("k.tanaka", "Sakura2025x"),
    ("ops", mixed(12)),
    ("grafana", "Gr4fana_Admin"),
]
for i, (u, p) in enumerate(CREDS):
    pair = f"{u}:{p}"
    if i % 3 == 1:
        add("url_credentials", f"mirror.{pair}", (pair, p), ("mirror",))
    elif i % 3 == 2:
        add("url_credentials", f"connect+{pair}", (pair, p), ("connect",))
    else:
        add("url_credentials", pair, (pair, p))

# ----------------------------------------------------------------------------- key_assignment
KA = [
    ("passwd", "changeme123"),
    ("REDIS_PASSWORD", "r3d1s-Pa55-Q4"),
    ("access_key", mixed(20)),
    ("token", mixed(28)),
    ("credentials", "admin-Adm1n"),
    ("api-key", mixed(18)),
    ("GITLAB_TOKEN", "glpat-" + rs(B64U, 20)),
    ("secret", "bluebird-orchard"),
    ("db.password", "P0stgresx"),
    ("webhook_secret", mixed(24)),
]
for i, (k, v) in enumerate(KA):
    sec = (v, tail(v)) if len(v) > 12 else (v,)
    if i % 4 == 1:
        add("key_assignment", f"gigathink.{k}:{v}", sec, ("gigathink", k))
    elif i % 4 == 3:
        add("key_assignment", f"reload+{k}:{v}", sec, ("reload", k))
    else:
        add("key_assignment", f"{k}:{v}", sec, (k,))

# ----------------------------------------------------------------------------- cli flags
CLI = [
    ("mysqldump.-pS3cretDb99", "S3cretDb99", ("mysqldump",)),
    (f"login--password+{(pw := mixed(14))}", pw, ("login",)),
    (f"curl--token:{(pw := mixed(24))}:--retry:3", pw, ("curl", "--retry:3")),
    (f"twine-upload--passwd_{(pw := mixed(16))}", pw, ("twine-upload",)),
    (f"vault--secret.{(pw := mixed(12))}", pw, ("vault",)),
    (
        f"rkd:think:--api-key:{(pw := mixed(20))}:--profile:deep",
        pw,
        ("rkd:think", "--profile:deep"),
    ),
    ("mysql:-hdb:-uadmin:-pWinter2025", "Winter2025", ("mysql", "-uadmin")),
]
for text, v, keep in CLI:
    add("cli_password_flag", text, (v, tail(v)) if len(v) > 12 else (v,), keep)

# ----------------------------------------------------------------------------- high entropy
for i in range(13):
    n = [20, 19, 18, 17, 16, 15, 14, 13, 12, 20, 14, 17, 12][i]
    pw = mixed(n)
    if i == 10:
        pw = mixed(6) + "." + mixed(7)
    if i == 11:
        pw = mixed(8) + "-" + mixed(8)
    if i == 12:
        pw = mixed(6) + "_" + mixed(6)
    ctx = CTXS[(i + 4) % 5]
    text, keep = place(pw, ctx, ["+", ".", ":", "-", "_"][i % 5] if ctx != "bare" else "")
    add("high_entropy", text, (pw, tail(pw)), keep)

# ----------------------------------------------------------------------------- exactly 64 chars
num = luhn_complete("37", 15)
card = "-".join(card_groups(num))
text, keep = fill64(card, ("gigathink", "checkout"), ":")
add("credit_card", text, (card, card[-12:]), keep)
ib = iban("FR")
text, keep = fill64(ib, ("payout",), ".")
add("iban", text, (ib, ib[-8:]), keep)
a, e, l_ = nanp()
ph = f"{a}.{e}.{l_}"
text, keep = fill64(ph, ("callback", "queue"), "-")
add("phone", text, (ph, f"{e}.{l_}"), keep)
ssn = f"{rng.randint(100, 599)}_{rng.randint(10, 99)}_{rng.randint(1000, 9999)}"
text, keep = fill64(ssn, ("kyc", "check"), ":")
add("ssn", text, (ssn, ssn[-7:]), keep)
mac = ":".join(rs(HEX, 2) for _ in range(6))
text, keep = fill64(mac, ("wol",), "+")
add("mac", text, (mac, mac[-8:]), keep)
ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
text, keep = fill64(ip, ("upstream",), "-")
add("ipv4", text, (ip,), keep)
pod = f"checkout-{rs(K8S, 10)}-{rs(K8S, 5)}"
text, keep = fill64(pod, ("logs",), ":")
add("hostname", text, (pod, pod[-16:]), keep)
tok = "ghp_" + rs(B62, 36)
text, keep = fill64(tok, ("ci", "clone"), ".")
add("github_token", text, (tok, tail(tok)), keep)
hx = rs(HEX, 40)
add("bearer", f"sync-pipelines-db-token:{hx}", (hx, tail(hx)), ("sync-pipelines-db", "token"))
user = "svc-nightly-backup-operator-eu-west-1-acme"
pw = mixed(64 - 1 - len(user))
add("url_credentials", f"{user}:{pw}", (f"{user}:{pw}", pw, tail(pw)))

# ----------------------------------------------------------------------------- KEEP
KEEP_VALUES = """
claude-3-sonnet-20240229 claude-3-5-sonnet-20240620 claude-opus-4-20250514 claude-3-5-sonnet-latest
claude-3-opus-latest claude-sonnet-4-5-20250929 claude-2.0 gpt-4o gpt-4-1106-preview
gpt-4o-audio-preview-2024-10-01 o1-2024-12-17 gpt-4o-realtime-preview text-embedding-ada-002
gpt-3.5-turbo-instruct gpt-4.1-mini-2025-04-14 o3-2025-04-16 gemini-1.5-flash-002
gemini-2.0-flash-thinking-exp-1219 gemini-1.0-pro-vision-001 gemini-2.5-pro-preview-05-06
llama3.2:3b-instruct-q8_0 qwen2.5:72b-instruct-q4_K_S mixtral:8x7b llava:13b starcoder2:15b
nomic-embed-text:v1.5 deepseek-coder-v2:16b qwen2.5-coder:7b-instruct-q5_K_M llama3:latest
mistral-medium-2312 mistral-small-2409 pixtral-large-2411 codestral-latest command-r-08-2024
command-light rerank-english-v3.0 ai21.jamba-1-5-large-v1:0 amazon.nova-pro-v1:0
anthropic.claude-3-5-sonnet-20240620-v1:0 meta.llama3-2-90b-instruct-v1:0
eu.anthropic.claude-3-haiku-20240307-v1:0 llama-3.1-8b-instant llama3-groq-70b-8192-tool-use-preview
grok-beta deepseek-reasoner Qwen2.5-Coder-32B-Instruct DeepSeek-R1-Distill-Qwen-14B
Llama-3.2-11B-Vision-Instruct gemma-2-9b-it Mistral-7B-Instruct-v0.3 bge-large-en-v1.5
all-MiniLM-L6-v2 e5-mistral-7b-instruct models--Qwen--Qwen2.5-7B-Instruct
qwen2.5-7b-instruct-q4_k_m.gguf my-gpt-35-turbo-16k Qwen2VLForConditionalGeneration
LlamaForCausalLM Gemma2ForCausalLM Wav2Vec2ForCTC
0.1.0 v1.2.3-alpha.1 1.0.0+20130313144700 3.12.7 2.5.1+cu121 24.04 2025.01.15 1.0.0rc1
0.15.0.post1.dev3 120.0.6099.109 17.0.13+11 1.81.0 node-v22.11.0 v0.4.7 1.2.3-dev+gabc1234
5.15.0-1051-azure 4.0.0b2 pydantic-2.10.3
E0308 E0599 ERR_MODULE_NOT_FOUND HTTP_503 HTTP_401 invalid_request_error insufficient_quota
ENOTFOUND ECONNRESET EPIPE SIGSEGV exit:1 0xC0000005 CUDA_ERROR_ILLEGAL_ADDRESS
grpc:DEADLINE_EXCEEDED SQLSTATE:23505 ORA-00942 TS2304 CS0246 WinError:10061 errno:104
permission_denied not_found_error
rk-core.gigathink laserlogic.v1 bedrock proofguard:strict brutalhonesty-run deep-research:run rk-core.plan.v1
think:quick plan:execute:dry-run tool:code_interpreter mcp:github.create_issue profile:paranoid
password_reset reset-password secret_scanning token_usage:4096 tokens_in:1532
max_output_tokens:8192 ssh:-p:2222 api_key_missing
20250105 2025-01-05T23:59:59Z 2025-01-05T23:59:59.123+05:30 23:59:59 1736121599 1736121599123
2025-W02 events:1024 retries:3 latency_ms:812 ctx:200000 bytes:268435456 port:11434 5432
abc1234 commit:e83c516 3f9a2b7c1d span_id:a3ce929d0e0e4736
sm_89 sm_80 gfx1100 arm64 armv7l i686 ppc64le riscv64 x86_64-pc-windows-msvc
aarch64-unknown-linux-musl macosx_11_0_arm64 cp312-cp312-manylinux_2_28_aarch64 cpython-3.12.7 py312
""".split()  # noqa: SIM905
for v in KEEP_VALUES:
    add("keep", v, (), (v,))
for _ in range(4):
    u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    add("keep", u, (), (u,))
u = str(uuid.UUID(int=rng.getrandbits(128), version=1)).upper()
add("keep", u, (), (u,))
u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
add("keep", f"trace.{u}.step2", (), (f"trace.{u}.step2",))
u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
add("keep", f"conversation:{u}", (), (f"conversation:{u}",))
u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
add("keep", f"{u}_think", (), (f"{u}_think",))
for v in ("gigathink:gpt-4o-mini-2024-07-18", "think+claude-3-5-haiku-20241022",
          "laserlogic.mistral:7b-instruct-v0.3-q5_K_M", "eval-gemini-2.0-flash-exp-run3",
          "compare:llama3.1:70b-instruct-q4_K_M:qwen2.5-coder:32b",
          "bench.Meta-Llama-3.1-8B-Instruct.2024-12-03"):  # fmt: skip
    add("keep", v, (), (v,))
for v in ("gigathink:anthropic.claude-3-5-sonnet-20241022-v2:0:deep.run4.ok",
          "cache:models--mistralai--Mistral-7B-Instruct-v0.3:snapshots:main",
          "2025-01-05T23:59:59Z:gigathink:gpt-4o-2024-08-06:latency_ms:8120"):  # fmt: skip
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
