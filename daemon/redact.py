"""The scanner and redactor: private data in a string becomes a typed placeholder.

``Scanner.redact("mail alice@example.com")`` returns ``("mail [EMAIL]", {"email": 1})``.
Placeholders keep the category countable without keeping the value. Passes run from
the most specific (a PEM block, a URL, a known key format) to the most general (a
hostname, a high-entropy token), so a value is claimed by the best description of it.
What a pass decides to keep (a URL's scheme and domain) is sealed away from later
passes and restored at the end.

Secrets are always removed. ``strip_pii=False`` keeps personal data (e-mail, phone, IP,
MAC, hostname, card, SSN, IBAN); ``redact_file_paths=False`` keeps paths.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

from rkd.daemon import detectors as d

PLACEHOLDERS: Final[dict[str, str]] = {
    "private_key": "[PRIVATE_KEY]", "url_credentials": "[SECRET]", "jwt": "[JWT]",
    "bearer": "[TOKEN]", "key_assignment": "[SECRET]", "cli_secret": "[SECRET]",
    "high_entropy": "[SECRET]", "email": "[EMAIL]", "path": "[USER_PATH]", "mac": "[MAC]",
    "ip": "[IP]", "credit_card": "[CARD]", "iban": "[IBAN]", "ssn": "[SSN]",
    "phone": "[PHONE]", "hostname": "[HOSTNAME]", "url": "",
    "anthropic_key": "[API_KEY]", "openai_key": "[API_KEY]", "aws_access_key": "[API_KEY]",
    "github_token": "[API_KEY]", "gitlab_token": "[API_KEY]", "slack_token": "[API_KEY]",
    "stripe_key": "[API_KEY]", "google_api_key": "[API_KEY]", "huggingface_token": "[API_KEY]",
    "npm_token": "[API_KEY]",
}  # fmt: skip
PII: Final = frozenset({"email", "mac", "ip", "credit_card", "iban", "ssn", "phone", "hostname"})
PATHS: Final = frozenset({"path"})
# Everything else is a secret (or a URL's private part) and is removed unconditionally.

# The shortest secret made of letters only: an AWS access key id (AKIA + 16 letters can
# be all letters; so can a Google API key, 39 characters). Shorter letter-only words
# cannot hold any finding, so they skip the scan.
ALPHA_SECRET_MIN: Final = 20

_SEAL: Final = "\x00"
_SEALED: Final = re.compile("\x00(\\d{1,6})\x00")
_PLAIN_VALUE: Final = re.compile(
    r"(?i)[\d.,_]+|true|false|null|none|yes|no|on|off|\*+|\[[A-Z_]+\]?"
)

Sub = Callable[["re.Match[str]"], str]


class Scanner:
    """Finds and replaces private data; one per daemon, built from the privacy settings."""

    def __init__(
        self,
        *,
        strip_pii: bool = True,
        redact_file_paths: bool = True,
        allowed_domains: Iterable[str] = d.DEFAULT_ALLOWED_DOMAINS,
    ) -> None:
        self.strip_pii = strip_pii
        self.redact_paths = redact_file_paths
        self.allowed = frozenset(x.lower().strip(".") for x in allowed_domains)

    # -- the public entry points -------------------------------------------------------------

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with every finding replaced, and the findings counted by category."""
        found: Counter[str] = Counter()
        if len(text) < 6 or (text.isalpha() and len(text) < ALPHA_SECRET_MIN):
            return text, found  # nothing private fits (a short bare word is a word)
        return _Run(self, text, found).run(), found

    def scan(self, text: str) -> Counter[str]:
        """Only the counts (used by `rkd audit`): what redact would remove, ignoring settings."""
        full = Scanner(allowed_domains=self.allowed)
        return full.redact(text)[1]

    def keeps(self, category: str) -> bool:
        """Whether this scanner's settings leave ``category`` in place."""
        return (category in PII and not self.strip_pii) or (
            category in PATHS and not self.redact_paths
        )

    def domain_allowed(self, host: str) -> bool:
        parts = host.lower().rstrip(".").split(".")
        return any(".".join(parts[i:]) in self.allowed for i in range(len(parts) - 1))


class _Run:
    """One redaction of one string: the passes, the seals, the counts."""

    def __init__(self, scanner: Scanner, text: str, found: Counter[str]) -> None:
        self.s, self.text, self.found = scanner, text, found
        self.sealed: list[str] = []

    def run(self) -> str:
        t = self.text
        if "-----BEGIN" in t:
            t = self._pem(t)
        if "://" in t:
            t = d.URL.sub(self._url, t)
        if "eyJ" in t:
            t = d.JWT.sub(self._put("jwt"), t)
        t = d.BEARER.sub(self._bearer, t)
        t = d.KEYS.sub(self._key, t)
        t = d.ASSIGNMENT.sub(self._assignment, t)
        if "-" in t:
            t = d.CLI_FLAG.sub(self._flag, t)
            t = d.SSHPASS.sub(self._flag, t)
            t = d.MYSQL_P.sub(self._mysql, t)
        if "@" in t:
            t = d.EMAIL.sub(self._put("email"), t)
        t = self._paths(t)
        t = d.MAC.sub(self._put("mac"), t)
        if ":" in t:
            t = self._validated(d.IPV6, "ip", d.ip_ok, t)
        if "." in t:
            t = d.IPV4.sub(self._put("ip"), t)
        t = self._validated(d.CARD, "credit_card", lambda v: d.card_ok(_digits(v)), t)
        t = self._iban(t)
        t = d.SSN.sub(self._put("ssn"), t)
        t = d.SSN_CONTEXT.sub(
            lambda m: m.group(1) + self._hit("ssn", m.group(0)[len(m.group(1)) :]), t
        )
        t = self._validated(d.PHONE, "phone", d.phone_ok, t)
        t = d.WINDOWS_HOST.sub(self._put("hostname"), t)
        if "-" in t:
            t = d.HOST_NAME_SHAPES.sub(self._put("hostname"), t)
        if "." in t:
            t = d.HOSTNAME.sub(self._host, t)
        if ":" in t:
            t = self._validated(d.USER_PASS, "url_credentials", _user_pass, t)
        t = d.NAMED_HEX.sub(lambda m: m.group(1) + self._hit("bearer", ""), t)
        t = self._token(t)
        t = self._validated(d.HEX_TOKEN, "high_entropy", d.hex_token_ok, t)
        t = self._validated(d.PASSWORD_RUN, "high_entropy", d.looks_password, t)
        t = self._validated(d.PASSWORD_PAIR, "high_entropy", _password_pair, t)
        if self.sealed:
            t = _SEALED.sub(lambda m: self.sealed[int(m.group(1))], t)
        return t

    # -- helpers -----------------------------------------------------------------------------

    def _hit(self, category: str, original: str) -> str:
        """Count a finding and return its replacement (the original when settings keep it)."""
        self.found[category] += 1
        return original if self.s.keeps(category) else PLACEHOLDERS[category]

    def _put(self, category: str) -> Sub:
        return lambda m: self._hit(category, m.group(0))

    def _validated(
        self, pattern: re.Pattern[str], category: str, ok: Callable[[str], bool], t: str
    ) -> str:
        """Like ``pattern.sub`` for candidates a validator confirms (Luhn, mod 97, ...).

        A rejected candidate must not swallow its text: the search resumes one character
        later, so "x:2001:db8::1" still finds the address after a failed ":2001...".
        Patterns are bounded, so the retries stay linear.
        """
        return self._each(pattern, t, lambda m: (
            (self._hit(category, m.group(0)), m.end()) if ok(m.group(0)) else None
        ))  # fmt: skip

    @staticmethod
    def _each(
        pattern: re.Pattern[str], t: str, replace: Callable[[re.Match[str]], tuple[str, int] | None]
    ) -> str:
        """``pattern.sub`` where ``replace(m)`` gives the text for ``t[m.start():end]`` and
        that ``end``, or None to let the candidate go and search again one character on."""
        out, pos, i = [], 0, 0
        while (m := pattern.search(t, i)) is not None:
            r = replace(m)
            if r is None:
                i = m.start() + 1
                continue
            out += [t[pos : m.start()], r[0]]
            pos = i = max(r[1], m.start() + 1)  # always forward: an empty match cannot spin
        if pos == 0:
            return t
        out.append(t[pos:])
        return "".join(out)

    def _token(self, t: str) -> str:
        """High-entropy tokens; plain lower-case words joined to one by a separator
        (``task+<token>+retry``) are kept around it."""

        def replace(m: re.Match[str]) -> tuple[str, int] | None:
            if not d.looks_random(m.group(0)):
                return None
            core = _WORDS_AROUND.fullmatch(m.group(0))
            head, tail = (core.group(1), core.group(3)) if core else ("", "")
            return head + self._hit("high_entropy", "") + tail, m.end()

        return self._each(d.TOKEN, t, replace)

    def _iban(self, t: str) -> str:
        """IBANs; a candidate that ran on into a word after it (``..._2766-failed``) is
        cut back at each separator and group boundary until mod 97 says yes."""

        def replace(m: re.Match[str]) -> tuple[str, int] | None:
            cand = m.group(0)
            ends = [len(cand)] + [k for k in range(len(cand) - 1, 14, -1)
                                  if cand[k] in " _.:+-" or not cand[k].isdigit()]  # fmt: skip
            end = next((e for e in ends if d.iban_ok(cand[:e].rstrip(" _.:+-"))), 0)
            if not end:
                return None
            kept = cand[:end].rstrip(" _.:+-")
            return self._hit("iban", kept), m.start() + len(kept)

        return self._each(d.IBAN, t, replace)

    def _seal(self, kept: str) -> str:
        self.sealed.append(kept)
        return f"{_SEAL}{len(self.sealed) - 1}{_SEAL}"

    # -- passes ------------------------------------------------------------------------------

    def _pem(self, t: str) -> str:
        """Whole private-key blocks, found with str.find (a regex here would be quadratic)."""
        out, pos = [], 0
        while (m := d.PEM_BEGIN.search(t, pos)) is not None:
            end_marker = t.find("-----END", m.end())
            close = t.find("-----", end_marker + 8) if end_marker >= 0 else -1
            stop = close + 5 if close >= 0 else len(t)  # an unterminated block runs to the end
            out += [t[pos : m.start()], self._hit("private_key", "")]
            pos = stop
        out.append(t[pos:])
        return "".join(out)

    def _url(self, m: re.Match[str]) -> str:
        scheme, userinfo, host, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        if userinfo:
            self._hit("url_credentials", "")
        if rest:
            self._hit("url", "")
        if d.ip_ok(host.strip("[]")):
            host = self._hit("ip", host)
        return self._seal(f"{scheme}://{host}")

    def _bearer(self, m: re.Match[str]) -> str:
        return m.group(1) + self._hit("bearer", "")

    def _key(self, m: re.Match[str]) -> str:
        assert m.lastgroup is not None
        return self._hit(m.lastgroup, m.group(0))

    def _assignment(self, m: re.Match[str]) -> str:
        value = m.group(2) or m.group(3) or m.group(4) or ""
        if _PLAIN_VALUE.fullmatch(value) or _SEAL in value:
            return m.group(0)  # tokens_used: 1500, verify_ssl = true, an already-sealed URL
        quote = '"' if m.group(2) is not None else "'" if m.group(3) is not None else ""
        return f"{m.group(1)}{quote}{self._hit('key_assignment', '')}{quote}"

    def _flag(self, m: re.Match[str]) -> str:
        return m.group(1) + self._hit("cli_secret", "")

    def _mysql(self, m: re.Match[str]) -> str:
        if not re.search(r"(?<![^\s:+_])-u\s?[^\s:+]", self.text) or "[" in m.group(1):
            return m.group(0)  # -p alone is ambiguous; only with a -u user flag beside it
        return "-p" + self._hit("cli_secret", "")

    def _paths(self, t: str) -> str:
        if "'" in t or '"' in t:
            t = d.QUOTED_PATH.sub(
                lambda m: m.group(1) + self._hit("path", m.group(2)) + m.group(1), t
            )
        if "\\" in t or ":" in t:
            t = d.WINDOWS_PATH.sub(self._put("path"), t)
        if "/" in t:
            t = d.POSIX_PATH.sub(self._put("path"), t)
            t = d.TILDE_PATH.sub(self._put("path"), t)
        return t

    def _host(self, m: re.Match[str]) -> str:
        host, tld = m.group(1), m.group(2).lower()
        if tld not in d.HOST_SUFFIXES or self.s.domain_allowed(host):
            return host
        return self._hit("hostname", host)


# Lower-case words (and their separators) before and after a token, and the token.
_WORDS_AROUND: Final = re.compile(
    r"((?:[a-z]{2,16}[+_.-]){0,8})(.{8,}?)((?:[+_.-][a-z]{2,16}){0,8})"
)


def _user_pass(text: str) -> bool:
    return d.password_value(text.split(":", 1)[1])


def _password_pair(text: str) -> bool:
    return d.looks_password("".join(c for c in text if c.isalnum()))


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())
