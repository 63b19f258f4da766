"""Labelled corpus for the privacy firewall: what must go and what must stay.

Each ``Case`` is one string as it might appear in a telemetry string field (a log line, an
error message, a JSON fragment, a CLI argument, an env file, a stack-trace line).

* ``secrets``: substrings that must NOT appear anywhere in the filtered output. For long
  tokens the last 12 characters are listed as well, so a match that stops short of the end
  of the token still fails; for phone, card and IBAN numbers the trailing digit groups are
  listed for the same reason. For paths the user-identifying part is listed (the user name
  and the directory it opens); for URLs the path, query and fragment.
* ``keep``: substrings that MUST appear unchanged in the filtered output: the words around a
  secret, and in ``keep`` cases everything that merely looks technical (model ids, versions,
  UUIDs, hex trace ids, timestamps, numbers, error codes, module paths, ...).

Every secret and keep string occurs literally in ``text``; removing all secrets from
``text`` leaves every keep string intact.

All secrets are fake: random characters of the right alphabet and length, or well-known
documentation examples (AKIAIOSFODNN7EXAMPLE, 4111 1111 1111 1111, DE89370400440532013000).
Card numbers pass Luhn and IBANs pass mod-97, so checksum-aware detectors find them.
``python tests/privacy_corpus.py`` re-checks all of this and prints counts per category.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    category: str  # one of CATEGORIES
    text: str  # the full input string, as it might appear in a telemetry string field
    secrets: tuple[str, ...]  # substrings that must NOT appear anywhere in the filtered output
    keep: tuple[str, ...]  # substrings that MUST appear unchanged in the filtered output


PII_CATEGORIES = (
    "email",
    "phone",
    "ipv4",
    "ipv6",
    "mac",
    "hostname",
    "credit_card",
    "ssn",
    "iban",
)
SECRET_CATEGORIES = (
    "anthropic_key",
    "openai_key",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "stripe_key",
    "google_api_key",
    "huggingface_token",
    "jwt",
    "bearer",
    "pem_private_key",
    "url_credentials",
    "key_assignment",
    "cli_password_flag",
    "high_entropy",
)
PATH_CATEGORIES = ("posix_path", "windows_path", "tilde_path", "quoted_path")
CATEGORIES = (*PII_CATEGORIES, *SECRET_CATEGORIES, *PATH_CATEGORIES, "url", "keep")

CASES: list[Case] = [
    # --- PII: email ---
    Case(
        "email",
        "think failed with rate_limit_exceeded for alice.nguyen@example.com",
        ("alice.nguyen@example.com",),
        ("think", "rate_limit_exceeded"),
    ),
    Case(
        "email",
        '{"user": "bob.okafor+rkd@mail.example.org", "profile": "balanced", "latency_ms": 2500}',
        ("bob.okafor+rkd@mail.example.org",),
        ('"profile": "balanced"', '"latency_ms": 2500'),
    ),
    Case(
        "email",
        "2025-12-28T10:30:00Z ERROR smtp: delivery to <Jane.Doe@Sub.Example.CO.UK> failed: 550 mailbox unavailable",
        ("Jane.Doe@Sub.Example.CO.UK",),
        ("2025-12-28T10:30:00Z", "ERROR", "550 mailbox unavailable"),
    ),
    Case(
        "email",
        "ユーザー tanaka.hiroshi@example.jp のエラー: overloaded_error",
        ("tanaka.hiroshi@example.jp",),
        ("ユーザー", "のエラー", "overloaded_error"),
    ),
    Case(
        "email",
        "Fehler: Konto für juergen.mueller@beispiel.de nicht gefunden (Versuch 3 von 5)",
        ("juergen.mueller@beispiel.de",),
        ("Fehler", "nicht gefunden", "Versuch 3 von 5"),
    ),
    Case(
        "email",
        "reply-to: priya_sharma99@example.in",
        ("priya_sharma99@example.in",),
        ("reply-to",),
    ),
    Case(
        "email",
        "Author: <emilie.dubois@exemple.fr> — « échec de la synchronisation »",
        ("emilie.dubois@exemple.fr",),
        ("Author:", "« échec de la synchronisation »"),
    ),
    Case(
        "email",
        "compare: sent report to ops-oncall@acme-corp.example, took 1.5 s",
        ("ops-oncall@acme-corp.example",),
        ("compare", "took 1.5 s"),
    ),
    Case(
        "email",
        "user_email=chen.wei@example.cn tool=gigathink profile=deep",
        ("chen.wei@example.cn",),
        ("tool=gigathink", "profile=deep"),
    ),
    Case(
        "email",
        "📧 invitation sent to maria.garcia@correo.example.es ✅",
        ("maria.garcia@correo.example.es",),
        ("📧", "invitation sent to", "✅"),
    ),
    Case(
        "email",
        "FROM: KARL.SCHMIDT@EXAMPLE.DE SUBJECT: HTTP 429 alerts",
        ("KARL.SCHMIDT@EXAMPLE.DE",),
        ("FROM:", "SUBJECT: HTTP 429 alerts"),
    ),
    Case(
        "email",
        "login ok for user_4821@students.uni-example.edu using profile paranoid",
        ("user_4821@students.uni-example.edu",),
        ("login ok for", "profile paranoid"),
    ),
    Case(
        "email",
        "用户 li.na@example.com.cn 请求失败，错误 E0425",
        ("li.na@example.com.cn",),
        ("用户", "请求失败", "E0425"),
    ),
    Case(
        "email",
        'raise PermissionError(f"{op} denied") from None  # owner: d.o.conn3ll@corp-mail.example.net',
        ("d.o.conn3ll@corp-mail.example.net",),
        ("raise PermissionError", "denied"),
    ),
    # --- PII: phone ---
    Case(
        "phone",
        "call me at +44 20 7946 0958 tomorrow",
        ("+44 20 7946 0958", "7946 0958"),
        ("call me at", "tomorrow"),
    ),
    Case(
        "phone",
        "support line: +1-415-555-2671 (US)",
        ("+1-415-555-2671", "555-2671"),
        ("support line:", "(US)"),
    ),
    Case(
        "phone",
        "Customer phone (415) 555-2671 saved to CRM",
        ("(415) 555-2671", "555-2671"),
        ("Customer phone", "saved to CRM"),
    ),
    Case(
        "phone",
        "Office: 020 7946 0958 (London)",
        ("020 7946 0958", "7946 0958"),
        ("Office:", "(London)"),
    ),
    Case(
        "phone",
        "Appelez-moi au 06 12 34 56 78 après 18h",
        ("06 12 34 56 78", "34 56 78"),
        ("Appelez-moi au", "après 18h"),
    ),
    Case(
        "phone",
        "Rückruf unter 030 1234567 erbeten",
        ("030 1234567", "1234567"),
        ("Rückruf unter", "erbeten"),
    ),
    Case(
        "phone",
        '{"phone": "+49 30 12345678", "locale": "de-DE", "profile": "quick"}',
        ("+49 30 12345678", "12345678"),
        ('"locale": "de-DE"', '"profile": "quick"'),
    ),
    Case(
        "phone",
        "Numéro portable : +33 6 12 34 56 78",
        ("+33 6 12 34 56 78", "34 56 78"),
        ("Numéro portable",),
    ),
    Case(
        "phone",
        "電話番号: +81 3-1234-5678 にご連絡ください",
        ("+81 3-1234-5678", "1234-5678"),
        ("電話番号", "にご連絡ください"),
    ),
    Case(
        "phone",
        "phone=415.555.2671 profile=quick",
        ("415.555.2671", "555.2671"),
        ("profile=quick",),
    ),
    Case(
        "phone",
        "2025-12-28T10:30:00Z WARN sms to +44 7700 900123 failed: HTTP 429",
        ("+44 7700 900123", "900123"),
        ("2025-12-28T10:30:00Z", "WARN", "HTTP 429"),
    ),
    Case(
        "phone",
        "Emergency contact +1 (212) 555-0147 (mobile)",
        ("+1 (212) 555-0147", "555-0147"),
        ("Emergency contact", "(mobile)"),
    ),
    Case(
        "phone",
        "Sydney office +61 2 9876 5432 🇦🇺",
        ("+61 2 9876 5432", "9876 5432"),
        ("Sydney office", "🇦🇺"),
    ),
    Case(
        "phone",
        "OTP sent to +91 98765 43210 in 2500ms",
        ("+91 98765 43210", "98765 43210"),
        ("OTP sent to", "2500ms"),
    ),
    Case(
        "phone",
        '<a href="tel:+14155552671">call sales</a>',
        ("+14155552671", "4155552671"),
        ("call sales",),
    ),
    Case(
        "phone",
        "Bel me op +31 6 12345678 als de build faalt",
        ("+31 6 12345678", "12345678"),
        ("Bel me op", "als de build faalt"),
    ),
    # --- PII: ipv4 ---
    Case(
        "ipv4",
        "connection from 192.168.1.42 refused: ECONNRESET",
        ("192.168.1.42",),
        ("connection from", "ECONNRESET"),
    ),
    Case(
        "ipv4",
        "upstream 10.0.12.7:8080 timed out after 2500ms",
        ("10.0.12.7",),
        ("upstream", "timed out after 2500ms"),
    ),
    Case(
        "ipv4",
        '{"client_ip": "203.0.113.77", "status": 404, "command": "metrics"}',
        ("203.0.113.77",),
        ('"status": 404', '"command": "metrics"'),
    ),
    Case(
        "ipv4",
        "X-Forwarded-For: 198.51.100.23, 172.16.254.1",
        ("198.51.100.23", "172.16.254.1"),
        ("X-Forwarded-For",),
    ),
    Case(
        "ipv4",
        "--- 100.64.3.9 ping statistics ---\n3 packets transmitted, 0 packets received, 100.0% packet loss",
        ("100.64.3.9",),
        ("3 packets transmitted", "100.0% packet loss"),
    ),
    Case(
        "ipv4",
        "IPアドレス 192.0.2.146 からのアクセスを拒否しました",
        ("192.0.2.146",),
        ("IPアドレス", "からのアクセスを拒否しました"),
    ),
    Case(
        "ipv4",
        "sshd[2231]: Invalid user admin from 185.220.101.47 port 51422",
        ("185.220.101.47",),
        ("sshd[2231]", "Invalid user admin"),
    ),
    Case(
        "ipv4",
        "2025-12-28 10:30:00+01:00 peer=172.31.5.200 rtt=35ms",
        ("172.31.5.200",),
        ("2025-12-28 10:30:00+01:00", "rtt=35ms"),
    ),
    # --- PII: ipv6 ---
    Case(
        "ipv6",
        "bind failed on 2001:0db8:85a3:0000:0000:8a2e:0370:7334 (EADDRINUSE)",
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334",),
        ("bind failed on", "EADDRINUSE"),
    ),
    Case(
        "ipv6",
        "client 2001:db8::8a2e:370:7334 sent 1,234 tokens",
        ("2001:db8::8a2e:370:7334",),
        ("client", "1,234 tokens"),
    ),
    Case(
        "ipv6",
        "link-local fe80::1ff:fe23:4567:890a%eth0 is up",
        ("fe80::1ff:fe23:4567:890a",),
        ("link-local", "is up"),
    ),
    Case(
        "ipv6",
        "accepted connection from ::ffff:192.0.2.128 at 10:30:00",
        ("::ffff:192.0.2.128", "192.0.2.128"),
        ("accepted connection from", "10:30:00"),
    ),
    Case(
        "ipv6",
        "GET http://[2001:db8:4006:812::200e]:8443/ HTTP/1.1 200",
        ("2001:db8:4006:812::200e",),
        ("HTTP/1.1 200",),
    ),
    Case(
        "ipv6",
        "Heimnetz-Adresse 2a02:8108:1c0:5e00:9d3b:77ff:fe41:2c19 ist erreichbar",
        ("2a02:8108:1c0:5e00:9d3b:77ff:fe41:2c19",),
        ("Heimnetz-Adresse", "ist erreichbar"),
    ),
    Case(
        "ipv6",
        "route add 2001:db8:0:0:1:0:0:1 via gateway",
        ("2001:db8:0:0:1:0:0:1",),
        ("route add", "via gateway"),
    ),
    Case(
        "ipv6",
        '{"remote_addr": "2001:db8:cafe:12::4b", "event": "think.completed", "ms": 812}',
        ("2001:db8:cafe:12::4b",),
        ('"event": "think.completed"', '"ms": 812'),
    ),
    # --- PII: mac ---
    Case(
        "mac",
        "device 00:1A:2B:3C:4D:5E joined the network",
        ("00:1A:2B:3C:4D:5E",),
        ("device", "joined the network"),
    ),
    Case(
        "mac",
        "Physical Address. . . . . . . . . : A4-83-E7-2F-9B-10",
        ("A4-83-E7-2F-9B-10",),
        ("Physical Address",),
    ),
    Case(
        "mac",
        "mac address-table static 001a.2b3c.4d5e vlan 10 interface GigabitEthernet0",
        ("001a.2b3c.4d5e",),
        ("mac address-table static", "vlan 10"),
    ),
    Case(
        "mac",
        "wlan0: flags=4163<UP,BROADCAST,RUNNING,MULTICAST> ether f0:18:98:4c:2e:7a txqueuelen 1000",
        ("f0:18:98:4c:2e:7a",),
        ("wlan0", "txqueuelen 1000"),
    ),
    Case(
        "mac",
        '{"mac": "8c:85:90:1b:c3:5f", "os": "macos", "arch": "arm64"}',
        ("8c:85:90:1b:c3:5f",),
        ('"os": "macos"', '"arch": "arm64"'),
    ),
    Case(
        "mac",
        "MAC-Adresse 3C:22:FB:91:0A:6D wurde gesperrt",
        ("3C:22:FB:91:0A:6D",),
        ("MAC-Adresse", "wurde gesperrt"),
    ),
    Case(
        "mac",
        "dhcp: lease for b8-27-eb-5a-11-c4 renewed ✅",
        ("b8-27-eb-5a-11-c4",),
        ("dhcp: lease for", "renewed ✅"),
    ),
    # --- PII: hostname ---
    Case(
        "hostname",
        "daemon started on alice-macbook-pro.local (darwin-arm64)",
        ("alice-macbook-pro.local",),
        ("daemon started on", "darwin-arm64"),
    ),
    Case(
        "hostname",
        "2025-12-28T10:30:00Z ERROR failed to connect to build-server-07.corp.example.com: ECONNREFUSED",
        ("build-server-07.corp.example.com",),
        ("2025-12-28T10:30:00Z", "ERROR", "ECONNREFUSED"),
    ),
    Case(
        "hostname",
        "host=DESKTOP-4F2K9QZ os=windows arch=x86_64",
        ("DESKTOP-4F2K9QZ",),
        ("os=windows", "arch=x86_64"),
    ),
    Case("hostname", "Computer name: LAPTOP-8JH3K2LM", ("LAPTOP-8JH3K2LM",), ("Computer name",)),
    Case(
        "hostname",
        "ssh: connect to host jenkins-agent-3.internal port 22: Connection timed out",
        ("jenkins-agent-3.internal",),
        ("ssh: connect to host", "Connection timed out"),
    ),
    Case(
        "hostname",
        "Backup auf nas-wohnzimmer.lan abgeschlossen (1.5 GB)",
        ("nas-wohnzimmer.lan",),
        ("Backup auf", "abgeschlossen (1.5 GB)"),
    ),
    Case(
        "hostname",
        '{"hostname": "Jeans-iMac.local", "profile": "deep", "version": "0.12.3-beta.1"}',
        ("Jeans-iMac.local",),
        ('"profile": "deep"', '"version": "0.12.3-beta.1"'),
    ),
    Case(
        "hostname",
        "replica db-primary-02.prod.corp lagging by 3.2s",
        ("db-primary-02.prod.corp",),
        ("replica", "lagging by 3.2s"),
    ),
    Case(
        "hostname",
        "ホスト名 tanaka-thinkpad.local で実行中",
        ("tanaka-thinkpad.local",),
        ("ホスト名", "で実行中"),
    ),
    # --- PII: credit_card ---
    Case(
        "credit_card",
        "payment failed for card 4414 4887 7352 1348 (insufficient_funds)",
        ("4414 4887 7352 1348", "7352 1348"),
        ("payment failed for card", "insufficient_funds"),
    ),
    Case(
        "credit_card",
        '{"card_number": "4232542597281560", "amount": 49.99, "currency": "EUR"}',
        ("4232542597281560", "97281560"),
        ('"amount": 49.99', '"currency": "EUR"'),
    ),
    Case(
        "credit_card",
        "MC 5163-0059-5686-3592 declined, HTTP 402",
        ("5163-0059-5686-3592", "5686-3592"),
        ("declined", "HTTP 402"),
    ),
    Case(
        "credit_card",
        "Kartennummer 2508 7968 4500 7927 wurde abgelehnt",
        ("2508 7968 4500 7927", "4500 7927"),
        ("Kartennummer", "wurde abgelehnt"),
    ),
    Case(
        "credit_card",
        "Amex 3740 494113 73348 exp 09/27",
        ("3740 494113 73348", "494113 73348"),
        ("Amex",),
    ),
    Case(
        "credit_card",
        "charge card=345366733505407 status=succeeded",
        ("345366733505407", "33505407"),
        ("status=succeeded",),
    ),
    Case(
        "credit_card",
        "test card 4111 1111 1111 1111 accepted by sandbox",
        ("4111 1111 1111 1111", "1111 1111"),
        ("test card", "accepted by sandbox"),
    ),
    Case(
        "credit_card",
        "carte bancaire 5555-5555-5555-4444 refusée ❌",
        ("5555-5555-5555-4444", "5555-4444"),
        ("carte bancaire", "refusée ❌"),
    ),
    Case(
        "credit_card",
        "クレジットカード 378282246310005 の決済に失敗しました",
        ("378282246310005", "46310005"),
        ("クレジットカード", "の決済に失敗しました"),
    ),
    # --- PII: ssn ---
    Case("ssn", "SSN: 746-93-0770 (verified)", ("746-93-0770",), ("(verified)",)),
    Case(
        "ssn",
        '{"ssn": "472-86-3714", "state": "CA", "command": "think"}',
        ("472-86-3714",),
        ('"state": "CA"', '"command": "think"'),
    ),
    Case(
        "ssn",
        "applicant social security number 003-82-3590 on file since 2024-01-15",
        ("003-82-3590",),
        ("applicant social security number", "2024-01-15"),
    ),
    Case(
        "ssn",
        "US-Sozialversicherungsnummer 273-53-6481 ungültig?",
        ("273-53-6481",),
        ("US-Sozialversicherungsnummer", "ungültig?"),
    ),
    Case(
        "ssn",
        "SSN 347 11 9132 entered in the wrong field",
        ("347 11 9132", "11 9132"),
        ("entered in the wrong field",),
    ),
    Case("ssn", "ssn#: 653885109 | profile=balanced", ("653885109",), ("profile=balanced",)),
    Case(
        "ssn",
        "W-2 form: employee SSN 427-70-7541, wages 1,234",
        ("427-70-7541",),
        ("W-2 form", "wages 1,234"),
    ),
    # --- PII: iban ---
    Case(
        "iban",
        "Überweisung an IBAN DE89370400440532013000 fehlgeschlagen",
        ("DE89370400440532013000", "0532013000"),
        ("Überweisung an IBAN", "fehlgeschlagen"),
    ),
    Case(
        "iban",
        "IBAN: DE77 2471 2652 7639 7951 35",
        ("DE77 2471 2652 7639 7951 35", "7639 7951 35"),
        ("IBAN:",),
    ),
    Case(
        "iban",
        '{"iban": "GB74NWBK63775208344831", "bic": "NWBKGB2L", "amount": 120}',
        ("GB74NWBK63775208344831", "5208344831"),
        ('"amount": 120',),
    ),
    Case(
        "iban",
        "Virement vers FR14 0452 2193 26Q8 87BG GM0V T76 effectué ✅",
        ("FR14 0452 2193 26Q8 87BG GM0V T76", "87BG GM0V T76"),
        ("Virement vers", "effectué ✅"),
    ),
    Case(
        "iban",
        "payout account NL33ABNA5603969714 verified in 2500ms",
        ("NL33ABNA5603969714", "5603969714"),
        ("payout account", "verified in 2500ms"),
    ),
    Case(
        "iban",
        "Cuenta ES05 4796 8436 3574 3633 4054 bloqueada por el banco",
        ("ES05 4796 8436 3574 3633 4054", "3633 4054"),
        ("Cuenta", "bloqueada por el banco"),
    ),
    Case(
        "iban",
        "bonifico su IT82X0979595715704062759742 non riuscito (errore 402)",
        ("IT82X0979595715704062759742", "4062759742"),
        ("bonifico su", "non riuscito (errore 402)"),
    ),
    Case(
        "iban",
        "refund_iban=CH27 6479 5206 1972 9945 3 status=pending",
        ("CH27 6479 5206 1972 9945 3", "1972 9945 3"),
        ("status=pending",),
    ),
    Case(
        "iban",
        "2025-12-28T10:30:00Z INFO SEPA mandate for BE79218930020184 created",
        ("BE79218930020184", "30020184"),
        ("2025-12-28T10:30:00Z", "SEPA mandate for", "created"),
    ),
    Case(
        "iban",
        "Kontonummer (IBAN) AT34 5592 0306 5687 3237 – bitte prüfen",
        ("AT34 5592 0306 5687 3237", "5687 3237"),
        ("Kontonummer (IBAN)", "bitte prüfen"),
    ),
    # --- secrets: anthropic_key ---
    Case(
        "anthropic_key",
        "ANTHROPIC_API_KEY=sk-ant-api03--L0ywJ1CoTvM6dtMr64FeKyAeMnlFXW4Z0qaEGuteoiSBmX6wkWz9omN9krVN9R7lcyIT5BsEyiy8wMHfnWVExGWP1Q5cAA",
        (
            "sk-ant-api03--L0ywJ1CoTvM6dtMr64FeKyAeMnlFXW4Z0qaEGuteoiSBmX6wkWz9omN9krVN9R7lcyIT5BsEyiy8wMHfnWVExGWP1Q5cAA",
            "VExGWP1Q5cAA",
        ),
        (),
    ),
    Case(
        "anthropic_key",
        'client = anthropic.Anthropic(api_key="sk-ant-api03-s4xANz4g5OWMkr3OJDHE455seiojheV8CjHdakNqBxpGgpCYWn1Vib7VMHQ9Jvb_qiXOgmQ7kotX-FJMaOdSLlWHoQGiEAA")  # TODO remove',
        (
            "sk-ant-api03-s4xANz4g5OWMkr3OJDHE455seiojheV8CjHdakNqBxpGgpCYWn1Vib7VMHQ9Jvb_qiXOgmQ7kotX-FJMaOdSLlWHoQGiEAA",
            "SLlWHoQGiEAA",
        ),
        ("anthropic.Anthropic", "# TODO remove"),
    ),
    Case(
        "anthropic_key",
        "2025-12-28T10:30:00Z ERROR authentication_error: invalid x-api-key sk-ant-api03-LmmM6DBd8134fDZusYRynrHzGZCd1Jpx3C7ZhdTLVItewmC5Um-0_1SaX_1G7eV1uuDTNOy1ShUAteQ8tLLHpRoASDV6oAA for model claude-3-5-sonnet-20241022",
        (
            "sk-ant-api03-LmmM6DBd8134fDZusYRynrHzGZCd1Jpx3C7ZhdTLVItewmC5Um-0_1SaX_1G7eV1uuDTNOy1ShUAteQ8tLLHpRoASDV6oAA",
            "HpRoASDV6oAA",
        ),
        ("2025-12-28T10:30:00Z", "authentication_error", "claude-3-5-sonnet-20241022"),
    ),
    Case(
        "anthropic_key",
        'curl https://api.anthropic.com/v1/messages -H "x-api-key: sk-ant-api03-aPwMFgDMI1U9FP3V4soh-ervz9uLsaQKpYY_FH_09HIrpYmZhCDBpRc7xFbzUk-irab52TTmW2eFwsZbZMmeDswqzkaYEAA" -H "anthropic-version: 2023-06-01"',
        (
            "sk-ant-api03-aPwMFgDMI1U9FP3V4soh-ervz9uLsaQKpYY_FH_09HIrpYmZhCDBpRc7xFbzUk-irab52TTmW2eFwsZbZMmeDswqzkaYEAA",
            "eDswqzkaYEAA",
        ),
        ("curl", "anthropic-version: 2023-06-01"),
    ),
    Case(
        "anthropic_key",
        '{"provider": "anthropic", "key": "sk-ant-api03-kFBk_YSPIv3qr6-7NjGtTMnkkb5gPcOzMkOs5kd2hdz-7v0McgFQAUJSQbfi_yxQXCZC6QvD8AnebyePTfitjhEknBovQAA", "profile": "deep"}',
        (
            "sk-ant-api03-kFBk_YSPIv3qr6-7NjGtTMnkkb5gPcOzMkOs5kd2hdz-7v0McgFQAUJSQbfi_yxQXCZC6QvD8AnebyePTfitjhEknBovQAA",
            "tjhEknBovQAA",
        ),
        ('"provider": "anthropic"', '"profile": "deep"'),
    ),
    Case(
        "anthropic_key",
        "APIキー sk-ant-api03-QS2kTQm3kSAcWlkEL2St_mJfr6JuHGHL-JW8Cjpw3zb6afTOM_-QF7A-WiZs5bp2LmCGcuCIW2W1IT4BoLD6Rue0TTTHoAA が無効です",
        (
            "sk-ant-api03-QS2kTQm3kSAcWlkEL2St_mJfr6JuHGHL-JW8Cjpw3zb6afTOM_-QF7A-WiZs5bp2LmCGcuCIW2W1IT4BoLD6Rue0TTTHoAA",
            "6Rue0TTTHoAA",
        ),
        ("APIキー", "が無効です"),
    ),
    Case(
        "anthropic_key",
        "think --profile quick failed: key sk-ant-api03-OfN9YkKVi5FXx538PEQ8G9EDPNmbs1oe2kpZbXNhclZCw83KX18oa1kAkaRLY8YYrDxQxRwI0F7NdXfcUSAxFlPYiG37RAA revoked",
        (
            "sk-ant-api03-OfN9YkKVi5FXx538PEQ8G9EDPNmbs1oe2kpZbXNhclZCw83KX18oa1kAkaRLY8YYrDxQxRwI0F7NdXfcUSAxFlPYiG37RAA",
            "xFlPYiG37RAA",
        ),
        ("think --profile quick failed", "revoked"),
    ),
    Case(
        "anthropic_key",
        "export ANTHROPIC_API_KEY='sk-ant-api03-bGJqK4HEsACuScKwW25F5FlDUOaiOeBH9A4lcDMWcEwnYvPN_Z_NHkQvmYlS134lYK1nms-QmSEJ3wIeHbpd11MoUUnyeAA'",
        (
            "sk-ant-api03-bGJqK4HEsACuScKwW25F5FlDUOaiOeBH9A4lcDMWcEwnYvPN_Z_NHkQvmYlS134lYK1nms-QmSEJ3wIeHbpd11MoUUnyeAA",
            "d11MoUUnyeAA",
        ),
        ("export",),
    ),
    Case(
        "anthropic_key",
        "admin key sk-ant-admin01-SiydGj-KJeQLmrhebqxPWhrK87FqHKw9-wMQH9GkG1JCNHm83U4AJ8x0Nfqvpm6Xjg6fTjR5bj09In1hbbk2UJW_c8UdZAA used to list workspaces",
        (
            "sk-ant-admin01-SiydGj-KJeQLmrhebqxPWhrK87FqHKw9-wMQH9GkG1JCNHm83U4AJ8x0Nfqvpm6Xjg6fTjR5bj09In1hbbk2UJW_c8UdZAA",
            "2UJW_c8UdZAA",
        ),
        ("admin key", "used to list workspaces"),
    ),
    Case(
        "anthropic_key",
        "anthropic:\n  admin_api_key: sk-ant-admin01-LqPCCCifwHSb9cfJdu6XfknUx7q7nnSboBFw0RTY2ujDC_ZgndA9koboSwPqhnezNlhGNZ4HXy48aiYo6dPsEeEN18k5OAA\n  org: default\n",
        (
            "sk-ant-admin01-LqPCCCifwHSb9cfJdu6XfknUx7q7nnSboBFw0RTY2ujDC_ZgndA9koboSwPqhnezNlhGNZ4HXy48aiYo6dPsEeEN18k5OAA",
            "sEeEN18k5OAA",
        ),
        ("anthropic:", "org: default"),
    ),
    # --- secrets: openai_key ---
    Case(
        "openai_key",
        "OPENAI_API_KEY=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",
        ("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", "Vevwf04s79kT"),
        (),
    ),
    Case(
        "openai_key",
        'openai.api_key = "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"  # legacy style',
        ("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", "bjMaG4II79f5"),
        ("# legacy style",),
    ),
    Case(
        "openai_key",
        "Incorrect API key provided: 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. You can find your API key at platform settings. (invalid_api_key)",
        ("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", "g9XCWDGpbrY5"),
        ("Incorrect API key provided", "invalid_api_key"),
    ),
    Case(
        "openai_key",
        "compare gpt-4o-mini vs claude-3-5-sonnet-20241022 using key 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",
        ("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", "hA10cGj1csES"),
        ("compare gpt-4o-mini vs claude-3-5-sonnet-20241022",),
    ),
    Case(
        "openai_key",
        '{"model": "gpt-4o-2024-08-06", "api_key": "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"}',
        (
            "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",
            "owTrRVgSeQiy",
        ),
        ('"model": "gpt-4o-2024-08-06"',),
    ),
    Case(
        "openai_key",
        'export OPENAI_API_KEY="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"',
        (
            "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",
            "XX6MtFSbTmps",
        ),
        ("export",),
    ),
    Case(
        "openai_key",
        "2025-12-28T10:30:00.000Z WARN openai 401 for key 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: insufficient_quota",
        (
            "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",
            "jUvzQ9KXBGsl",
        ),
        ("2025-12-28T10:30:00.000Z", "WARN", "insufficient_quota"),
    ),
    Case(
        "openai_key",
        "Clé API 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 refusée par le serveur",
        (
            "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",
            "03tqWSZLTrl_",
        ),
        ("Clé API", "refusée par le serveur"),
    ),
    Case(
        "openai_key",
        "service account key: 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",
        (
            "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",
            "t2F5uBg9AvTZ",
        ),
        ("service account key",),
    ),
    Case(
        "openai_key",
        "llm:\n  provider: openai\n  key: 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\n  model: o1-preview\n",
        (
            "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",
            "qA4JY3W6nOkz",
        ),
        ("provider: openai", "model: o1-preview"),
    ),
    # --- secrets: aws_access_key ---
    Case(
        "aws_access_key", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", ("AKIAIOSFODNN7EXAMPLE",), ()
    ),
    Case(
        "aws_access_key",
        "AWS_ACCESS_KEY_ID=AKIAEOZSPYFXJGQXPY2I AWS_REGION=eu-central-1",
        ("AKIAEOZSPYFXJGQXPY2I",),
        ("AWS_REGION=eu-central-1",),
    ),
    Case(
        "aws_access_key",
        "An error occurred (InvalidClientTokenId): The security token included in the request is invalid. key=AKIANEU2INDWZLEN5Q5N",
        ("AKIANEU2INDWZLEN5Q5N",),
        ("InvalidClientTokenId", "The security token included in the request is invalid"),
    ),
    Case(
        "aws_access_key",
        '{"AccessKeyId": "ASIA56LGOZKNVBBVYLV7", "Expiration": "2025-12-28T10:30:00Z"}',
        ("ASIA56LGOZKNVBBVYLV7",),
        ('"Expiration": "2025-12-28T10:30:00Z"',),
    ),
    Case(
        "aws_access_key",
        "boto3.client('s3', aws_access_key_id='AKIAROHWQRUPOJ5LNW4X')",
        ("AKIAROHWQRUPOJ5LNW4X",),
        ("boto3.client('s3'",),
    ),
    Case(
        "aws_access_key",
        "temporäre Zugangsdaten ASIAMZ65YCSNXUVCWJGL laufen in 15 min ab",
        ("ASIAMZ65YCSNXUVCWJGL",),
        ("temporäre Zugangsdaten", "laufen in 15 min ab"),
    ),
    Case(
        "aws_access_key",
        "found access key AKIAZWIWIMMJJQI2SRCN in commit a1b2c3d",
        ("AKIAZWIWIMMJJQI2SRCN",),
        ("found access key", "in commit a1b2c3d"),
    ),
    # --- secrets: aws_secret_key ---
    Case(
        "aws_secret_key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "bPxRfiCYEXAMPLEKEY"),
        (),
    ),
    Case(
        "aws_secret_key",
        "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = 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\nregion = us-east-1\n",
        ("s+sU3YxV4rBSbGyCSLyIKTxuv+A4nQjziCGVE7td", "nQjziCGVE7td", "AKIAIOSFODNN7EXAMPLE"),
        ("[default]", "region = us-east-1"),
    ),
    Case(
        "aws_secret_key",
        "AWS_SECRET_ACCESS_KEY=OHMKqFkaLfUCPScO9BoqQSNV3oKC7eS+Ow+ieOOa",
        ("OHMKqFkaLfUCPScO9BoqQSNV3oKC7eS+Ow+ieOOa", "7eS+Ow+ieOOa"),
        (),
    ),
    Case(
        "aws_secret_key",
        '{"Credentials": {"SecretAccessKey": "0q2zc2yB4wngCMbE5Bh5jt3OegXppZobgAe07g/i", "Expiration": "2025-12-28T11:30:00Z"}}',
        ("0q2zc2yB4wngCMbE5Bh5jt3OegXppZobgAe07g/i", "pZobgAe07g/i"),
        ('"Expiration": "2025-12-28T11:30:00Z"',),
    ),
    Case(
        "aws_secret_key",
        "aws configure set aws_secret_access_key yeus5eW0sEul0oSVUXh1iBj268R1gL2oaRSQeT3z --profile staging",
        ("yeus5eW0sEul0oSVUXh1iBj268R1gL2oaRSQeT3z", "gL2oaRSQeT3z"),
        ("aws configure set", "--profile staging"),
    ),
    Case(
        "aws_secret_key",
        'session = boto3.Session(aws_secret_access_key="W6joFEkFmKMKu0h+2CdcD0Yg4OUbZ1wFkcZkAQ/H", region_name="eu-west-1")',
        ("W6joFEkFmKMKu0h+2CdcD0Yg4OUbZ1wFkcZkAQ/H", "Z1wFkcZkAQ/H"),
        ("boto3.Session", 'region_name="eu-west-1"'),
    ),
    Case(
        "aws_secret_key",
        "  secret_access_key: LjUhSegWQkC0TMsugGzOg9AUAjpH0k01ogkHRzLK  # Schlüssel für S3-Backups",
        ("LjUhSegWQkC0TMsugGzOg9AUAjpH0k01ogkHRzLK", "0k01ogkHRzLK"),
        ("# Schlüssel für S3-Backups",),
    ),
    # --- secrets: github_token ---
    Case(
        "github_token",
        "GITHUB_TOKEN=ghp_G5EMfidGvaUnbLfDeCryA4skFxGP7rYuZvla",
        ("ghp_G5EMfidGvaUnbLfDeCryA4skFxGP7rYuZvla", "FxGP7rYuZvla"),
        (),
    ),
    Case(
        "github_token",
        "gh: token gho_KNENw0a6J0EGh7tsqzVA7J7m634V7G7Ro232 expired, run `gh auth login`",
        ("gho_KNENw0a6J0EGh7tsqzVA7J7m634V7G7Ro232", "634V7G7Ro232"),
        ("expired, run `gh auth login`",),
    ),
    Case(
        "github_token",
        '{"token": "ghu_4rOTreVkwqFVQvv9icAh4LmBzne3iQwJraOF", "expires_in": 28800, "token_type": "bearer"}',
        ("ghu_4rOTreVkwqFVQvv9icAh4LmBzne3iQwJraOF", "zne3iQwJraOF"),
        ('"expires_in": 28800',),
    ),
    Case(
        "github_token",
        "2025-12-28T10:30:00Z DEBUG installation token ghs_h2o3dMOEqKguQug6Msq4Ug2f8memmQYy8aDU issued for app 12345",
        ("ghs_h2o3dMOEqKguQug6Msq4Ug2f8memmQYy8aDU", "8memmQYy8aDU"),
        ("2025-12-28T10:30:00Z", "DEBUG", "issued for app 12345"),
    ),
    Case(
        "github_token",
        "refresh_token=ghr_MuBL749ggPphkQn6dYcm3UMQsbesj0laSApw&grant_type=refresh_token",
        ("ghr_MuBL749ggPphkQn6dYcm3UMQsbesj0laSApw", "sbesj0laSApw"),
        ("grant_type=refresh_token",),
    ),
    Case(
        "github_token",
        "Authorization: token ghp_4VQRC0cLf5QLG6fBFKC5XQr03IPk0MXcsFC3",
        ("ghp_4VQRC0cLf5QLG6fBFKC5XQr03IPk0MXcsFC3", "3IPk0MXcsFC3"),
        (),
    ),
    Case(
        "github_token",
        "fine-grained PAT 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 has no access to this repository (HTTP 403)",
        (
            "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",
            "5gLA58xf4ZI6",
        ),
        ("fine-grained PAT", "HTTP 403"),
    ),
    Case(
        "github_token",
        "env:\n  GH_TOKEN: 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\n  NODE_ENV: production\n",
        (
            "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",
            "qSF2mWQEaF2E",
        ),
        ("env:", "NODE_ENV: production"),
    ),
    Case(
        "github_token",
        "Fehler: Token ghp_7wa7w58fpH6dEQeIV2khW4ghshNgUuVVuO43 ist abgelaufen 😞",
        ("ghp_7wa7w58fpH6dEQeIV2khW4ghshNgUuVVuO43", "shNgUuVVuO43"),
        ("Fehler: Token", "ist abgelaufen 😞"),
    ),
    Case(
        "github_token",
        "[credential]\n\thelper = store\n# cached oauth: gho_EXZxgP5k6Qwq1QtdxSLU65dza6qp0MdkotXM\n",
        ("gho_EXZxgP5k6Qwq1QtdxSLU65dza6qp0MdkotXM", "a6qp0MdkotXM"),
        ("[credential]", "helper = store"),
    ),
    # --- secrets: gitlab_token ---
    Case(
        "gitlab_token",
        "GITLAB_TOKEN=glpat-rACbGlGuQIP4-0_SinK5",
        ("glpat-rACbGlGuQIP4-0_SinK5",),
        (),
    ),
    Case(
        "gitlab_token",
        'curl --header "PRIVATE-TOKEN: glpat-3okUif3ZYg5NFCRFmwDs" "https://gitlab.example.com/api/v4/projects"',
        ("glpat-3okUif3ZYg5NFCRFmwDs",),
        ("curl --header",),
    ),
    Case(
        "gitlab_token",
        "gitlab runner registered with token glpat-W9iPT0t_0UCXryQaSlYt at 2025-12-28T10:30:00Z",
        ("glpat-W9iPT0t_0UCXryQaSlYt",),
        ("gitlab runner registered with token", "2025-12-28T10:30:00Z"),
    ),
    Case(
        "gitlab_token",
        '{"personal_access_token": "glpat-G6jHzI6gN98zDo2CdOy7", "scopes": ["read_api"]}',
        ("glpat-G6jHzI6gN98zDo2CdOy7",),
        ('"scopes": ["read_api"]',),
    ),
    Case(
        "gitlab_token",
        "variables:\n  CI_DEPLOY_TOKEN: glpat-F8E1G-gpL2eG0VvEB3iH\n  STAGE: deploy\n",
        ("glpat-F8E1G-gpL2eG0VvEB3iH",),
        ("variables:", "STAGE: deploy"),
    ),
    Case(
        "gitlab_token",
        "トークン glpat-ITgD28wyUnlwF-np-xX0 は失効しました",
        ("glpat-ITgD28wyUnlwF-np-xX0",),
        ("トークン", "は失効しました"),
    ),
    # --- secrets: slack_token ---
    Case(
        "slack_token",
        "SLACK_BOT_TOKEN=xoxb-970495087018-6759299664575-s1EIxOKje0Khf8UOR7K13qgg",
        ("xoxb-970495087018-6759299664575-s1EIxOKje0Khf8UOR7K13qgg", "f8UOR7K13qgg"),
        (),
    ),
    Case(
        "slack_token",
        "slack api error not_authed for token xoxp-502737952090-271038747706-9091432215487-1f985906be49b8f5c71e9e7b45407fc3",
        (
            "xoxp-502737952090-271038747706-9091432215487-1f985906be49b8f5c71e9e7b45407fc3",
            "9e7b45407fc3",
        ),
        ("slack api error not_authed",),
    ),
    Case(
        "slack_token",
        '{"ok": true, "access_token": "xoxa-2-542615845865-2613939963204-83334878641a5d1de9098681bc647f1fec5d3ad8da18027b2e153d8fd9d0f297", "team": "T0001"}',
        (
            "xoxa-2-542615845865-2613939963204-83334878641a5d1de9098681bc647f1fec5d3ad8da18027b2e153d8fd9d0f297",
            "3d8fd9d0f297",
        ),
        ('"ok": true',),
    ),
    Case(
        "slack_token",
        "refresh with xoxr-757575063031-9859143822708-AKCv23xDK23XWz76encidWea failed: invalid_refresh_token",
        ("xoxr-757575063031-9859143822708-AKCv23xDK23XWz76encidWea", "Wz76encidWea"),
        ("invalid_refresh_token",),
    ),
    Case(
        "slack_token",
        "socket mode: SLACK_APP_TOKEN=xapp-1-ALYGKYVQBS7-1285122936903-21cbe329c658687751c80336e77f18889886a3d276f4f72a905fd8c923f53523 connected in 812ms",
        (
            "xapp-1-ALYGKYVQBS7-1285122936903-21cbe329c658687751c80336e77f18889886a3d276f4f72a905fd8c923f53523",
            "d8c923f53523",
        ),
        ("socket mode", "connected in 812ms"),
    ),
    Case(
        "slack_token",
        "posting alert to https://hooks.slack.com/services/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 returned HTTP 404 no_service",
        ("/services/TOZSMY9BH/BKW36HEQ3JH/vKiWvx9PmVIgqx7AwUyy6AHp", "qx7AwUyy6AHp"),
        ("posting alert to", "HTTP 404 no_service"),
    ),
    Case(
        "slack_token",
        'notify:\n  webhook_url: "https://hooks.slack.com/services/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"\n  channel: "#alerts"\n',
        ("/services/TY0XE8QCSHC/BMRH65PUIZL/sLsGyuNfPzbIz06ZtMR78Ynj", "z06ZtMR78Ynj"),
        ("notify:", 'channel: "#alerts"'),
    ),
    Case(
        "slack_token",
        "Slack-Bot-Token xoxb-313835457707-6865303289888-TbmU29Hhsv9dm94rbH9o3gEA ungültig (invalid_auth)",
        ("xoxb-313835457707-6865303289888-TbmU29Hhsv9dm94rbH9o3gEA", "m94rbH9o3gEA"),
        ("Slack-Bot-Token", "invalid_auth"),
    ),
    # --- secrets: stripe_key ---
    Case(
        "stripe_key",
        "STRIPE_SECRET_KEY=sk_live_QjHQKqRs3wJ5uYE9LwdPDnVJ",
        ("sk_live_QjHQKqRs3wJ5uYE9LwdPDnVJ", "uYE9LwdPDnVJ"),
        (),
    ),
    Case(
        "stripe_key",
        "stripe.api_key = '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'  # restricted, read-only",
        (
            "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",
            "cRlwoe14zMet",
        ),
        ("# restricted, read-only",),
    ),
    Case(
        "stripe_key",
        "Invalid API Key provided: sk_test_emOaI0dMxDCD7cKBbtc9GuDS (HTTP 401)",
        ("sk_test_emOaI0dMxDCD7cKBbtc9GuDS", "7cKBbtc9GuDS"),
        ("Invalid API Key provided", "HTTP 401"),
    ),
    Case(
        "stripe_key",
        '<script>Stripe("pk_live_YUq6KTCI6qU0wJcehw1no8MFyGWlJo2xE3ZvxuWdR6SELa4eKANWQLL3x8Kkf05hQDYp2pbjNqz1pCB09w8rjWSyvXsnMwfE8MR")</script>',
        (
            "pk_live_YUq6KTCI6qU0wJcehw1no8MFyGWlJo2xE3ZvxuWdR6SELa4eKANWQLL3x8Kkf05hQDYp2pbjNqz1pCB09w8rjWSyvXsnMwfE8MR",
            "yvXsnMwfE8MR",
        ),
        ("<script>",),
    ),
    Case(
        "stripe_key",
        "2025-12-28T10:30:00Z ERROR charge failed, key=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 code=card_declined",
        (
            "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",
            "jWuUVSShV9et",
        ),
        ("2025-12-28T10:30:00Z", "charge failed", "code=card_declined"),
    ),
    Case(
        "stripe_key",
        '{"stripe": {"secret": "sk_test_YjvMmI5Va8wDsazCFzKX4VecAzIg1w6BsmBa7rBzyQU9VmCfQEbU7nm7OodHcRU6PpQIHTFJifrYHeUEBW4KD7BZnyhFcJCxtSn", "mode": "test"}}',
        (
            "sk_test_YjvMmI5Va8wDsazCFzKX4VecAzIg1w6BsmBa7rBzyQU9VmCfQEbU7nm7OodHcRU6PpQIHTFJifrYHeUEBW4KD7BZnyhFcJCxtSn",
            "ZnyhFcJCxtSn",
        ),
        ('"mode": "test"',),
    ),
    Case(
        "stripe_key",
        "clé restreinte rk_live_IPAevR635Tg5MyzTn6awREuw supprimée",
        ("rk_live_IPAevR635Tg5MyzTn6awREuw", "MyzTn6awREuw"),
        ("clé restreinte", "supprimée"),
    ),
    # --- secrets: google_api_key ---
    Case(
        "google_api_key",
        "GOOGLE_API_KEY=AIzaSyzDEQyVzT04z3LPE-NouloGkpO_FgC2rnx",
        ("AIzaSyzDEQyVzT04z3LPE-NouloGkpO_FgC2rnx", "GkpO_FgC2rnx"),
        (),
    ),
    Case(
        "google_api_key",
        "https://generativelanguage.googleapis.com/v1beta/models?key=AIzaSy70nXTU1OmDpl6aHulblY4vlNa-GNJtsz7",
        ("AIzaSy70nXTU1OmDpl6aHulblY4vlNa-GNJtsz7", "vlNa-GNJtsz7"),
        ("https://generativelanguage.googleapis.com",),
    ),
    Case(
        "google_api_key",
        'genai.configure(api_key="AIzaSyvxq0yv4KZmQWrfZmr1a2zkYkMFyzRBSSN")  # gemini-1.5-pro-002',
        ("AIzaSyvxq0yv4KZmQWrfZmr1a2zkYkMFyzRBSSN", "kYkMFyzRBSSN"),
        ("genai.configure", "# gemini-1.5-pro-002"),
    ),
    Case(
        "google_api_key",
        '{"apiKey": "AIzaSyFfOsDjPFxkjjOkKZCm6BODG3VvLnhJur8", "authDomain": "demo-app.firebaseapp.com"}',
        ("AIzaSyFfOsDjPFxkjjOkKZCm6BODG3VvLnhJur8", "DG3VvLnhJur8"),
        ('"authDomain"',),
    ),
    Case(
        "google_api_key",
        "API key not valid. Please pass a valid API key. (AIzaSySK-EjMk8grEFkZTS4qzPDt6qIR6ZnFKg0) INVALID_ARGUMENT",
        ("AIzaSySK-EjMk8grEFkZTS4qzPDt6qIR6ZnFKg0", "t6qIR6ZnFKg0"),
        ("API key not valid", "INVALID_ARGUMENT"),
    ),
    Case(
        "google_api_key",
        "Gemini 密钥 AIzaSyIfNHibmYxddy7KWV55wqdvX5oTayCuXET 已泄露，请轮换",
        ("AIzaSyIfNHibmYxddy7KWV55wqdvX5oTayCuXET", "vX5oTayCuXET"),
        ("Gemini 密钥", "已泄露，请轮换"),
    ),
    # --- secrets: huggingface_token ---
    Case(
        "huggingface_token",
        "HF_TOKEN=hf_ZqrzcAzLWH6BaT5WIX2OyuMXzABJ1gErga",
        ("hf_ZqrzcAzLWH6BaT5WIX2OyuMXzABJ1gErga", "MXzABJ1gErga"),
        (),
    ),
    Case(
        "huggingface_token",
        "huggingface-cli login --token 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 --add-to-git-credential",
        ("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", "MXKTyQMPgihY"),
        ("huggingface-cli login", "--add-to-git-credential"),
    ),
    Case(
        "huggingface_token",
        "401 Client Error: Unauthorized for llama-3.1-70b-instruct (token hf_4k308S2f4gACJdNaQgjOTlsNiF7gyGG3eh)",
        ("hf_4k308S2f4gACJdNaQgjOTlsNiF7gyGG3eh", "sNiF7gyGG3eh"),
        ("401 Client Error: Unauthorized", "llama-3.1-70b-instruct"),
    ),
    Case(
        "huggingface_token",
        'from_pretrained("mistral-large-2407", token="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")',
        ("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", "zMmaZkXuMPyW"),
        ("from_pretrained", "mistral-large-2407"),
    ),
    Case(
        "huggingface_token",
        '{"hf_token": "hf_H5djYRBISe8PGBHP5JOCICd7rSE1ReCgtO", "revision": "main"}',
        ("hf_H5djYRBISe8PGBHP5JOCICd7rSE1ReCgtO", "d7rSE1ReCgtO"),
        ('"revision": "main"',),
    ),
    Case(
        "huggingface_token",
        "Zugriffstoken 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 hat keine Schreibrechte",
        ("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", "QAluWQklBbWi"),
        ("Zugriffstoken", "hat keine Schreibrechte"),
    ),
    # --- secrets: jwt ---
    Case(
        "jwt",
        "Cookie: session=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IlRlc3QgVXNlciIsImlhdCI6MTczNTM4MTgwMH0.CCCENVH1ee5LY3_o-kulInE_xSV15oXqcIJ9onzUpn1; Path=/; HttpOnly",
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IlRlc3QgVXNlciIsImlhdCI6MTczNTM4MTgwMH0.CCCENVH1ee5LY3_o-kulInE_xSV15oXqcIJ9onzUpn1",
            "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IlRlc3QgVXNlciIsImlhdCI6MTczNTM4MTgwMH0",
            "CCCENVH1ee5LY3_o-kulInE_xSV15oXqcIJ9onzUpn1",
        ),
        ("HttpOnly",),
    ),
    Case(
        "jwt",
        "id_token=eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMHVZM1RxMFZuVEtjIiwiZW1haWxfdmVyaWZpZWQiOnRydWUsImV4cCI6MTczNTM4NTQwMH0.DngMuzn8TLW5o6QjCPmoNR6UVmm_yWjI4km55_ixYfT5QcNeruOhiVeAg1zh0P_eTUnpj67glWsgJqobPpGcLR7XkR_IioZW5DUurlVQv5DWg_qjsMMWBXNkdPJ_hpdRHpJ8e9mbvhdEbOlUEnhMJjYbnw5vrrfLUxzcesX5UKboevrwiIcHua5_g6Kh1m6ynLJnZiRfdc5MbEpDiauNTkYWN14Z-kSoFrKz4jbNQXLpMhWvUCWE4ACV0n7FseBBFN9nW8plLN_MLcsMr_TIh1sHUh5Go0kYokwddBSu9bNML1PvoTaMJXovYvanx4JOQ7QrCncYD-eIfTJebIvKil",
        (
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMHVZM1RxMFZuVEtjIiwiZW1haWxfdmVyaWZpZWQiOnRydWUsImV4cCI6MTczNTM4NTQwMH0.DngMuzn8TLW5o6QjCPmoNR6UVmm_yWjI4km55_ixYfT5QcNeruOhiVeAg1zh0P_eTUnpj67glWsgJqobPpGcLR7XkR_IioZW5DUurlVQv5DWg_qjsMMWBXNkdPJ_hpdRHpJ8e9mbvhdEbOlUEnhMJjYbnw5vrrfLUxzcesX5UKboevrwiIcHua5_g6Kh1m6ynLJnZiRfdc5MbEpDiauNTkYWN14Z-kSoFrKz4jbNQXLpMhWvUCWE4ACV0n7FseBBFN9nW8plLN_MLcsMr_TIh1sHUh5Go0kYokwddBSu9bNML1PvoTaMJXovYvanx4JOQ7QrCncYD-eIfTJebIvKil",
            "eyJzdWIiOiJ1c3JfMHVZM1RxMFZuVEtjIiwiZW1haWxfdmVyaWZpZWQiOnRydWUsImV4cCI6MTczNTM4NTQwMH0",
            "DngMuzn8TLW5o6QjCPmoNR6UVmm_yWjI4km55_ixYfT5QcNeruOhiVeAg1zh0P_eTUnpj67glWsgJqobPpGcLR7XkR_IioZW5DUurlVQv5DWg_qjsMMWBXNkdPJ_hpdRHpJ8e9mbvhdEbOlUEnhMJjYbnw5vrrfLUxzcesX5UKboevrwiIcHua5_g6Kh1m6ynLJnZiRfdc5MbEpDiauNTkYWN14Z-kSoFrKz4jbNQXLpMhWvUCWE4ACV0n7FseBBFN9nW8plLN_MLcsMr_TIh1sHUh5Go0kYokwddBSu9bNML1PvoTaMJXovYvanx4JOQ7QrCncYD-eIfTJebIvKil",
        ),
        (),
    ),
    Case(
        "jwt",
        '{"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20vIiwiYXVkIjoicmtkIiwic2NvcGUiOiJyZWFkOm1ldHJpY3MifQ.7uy3EMot--pBXZqUM5gt-t5-rZlU-pO1j94LuJNZw3h", "expires_in": 3600}',
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20vIiwiYXVkIjoicmtkIiwic2NvcGUiOiJyZWFkOm1ldHJpY3MifQ.7uy3EMot--pBXZqUM5gt-t5-rZlU-pO1j94LuJNZw3h",
            "eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20vIiwiYXVkIjoicmtkIiwic2NvcGUiOiJyZWFkOm1ldHJpY3MifQ",
            "7uy3EMot--pBXZqUM5gt-t5-rZlU-pO1j94LuJNZw3h",
        ),
        ('"expires_in": 3600',),
    ),
    Case(
        "jwt",
        "2025-12-28T10:30:00Z WARN jwt expired: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJPTXdBVDVtMnlrZGR1VDI3Iiwicm9sZSI6ImFkbWluIn0.ZTFRe15HMidJZRUpazJ5FCDWWAt5OfJQLkFs9L0VzY-",
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJPTXdBVDVtMnlrZGR1VDI3Iiwicm9sZSI6ImFkbWluIn0.ZTFRe15HMidJZRUpazJ5FCDWWAt5OfJQLkFs9L0VzY-",
            "eyJzdWIiOiJPTXdBVDVtMnlrZGR1VDI3Iiwicm9sZSI6ImFkbWluIn0",
            "ZTFRe15HMidJZRUpazJ5FCDWWAt5OfJQLkFs9L0VzY-",
        ),
        ("2025-12-28T10:30:00Z", "WARN", "jwt expired"),
    ),
    Case(
        "jwt",
        "token invalide : eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXNzaW9uIjoicVlXMEsxUjZQOG52VTJBa2ZNbkQiLCJleHAiOjE3NjcyMjU2MDB9.VmWVcmXb8JA5SxX8IhSRkv5iec7acF1PRBRLoF6dePLNETauhEZJokMAJEUPAziMKcdbSh1XZiAD5tGZ5oLOckqyjGfv4R4HLgTq3I-NHezCqII9NLVsWdjDKgeRqAZye8ktJqZB-Lnkx7ccbQuyNBnYhH186JeIejePXu0djSTYnJokFbAE84Nu9rqYKW-PjFcRaySHtZOH4ko02zh6DyOyumN1ubWwbF82szq5aWu8EDr-3guoCIhFzQpzbarOUQCGcgTvFIBvTjwWlI0uP2MheP3t-JLCrRvF4okopabywnaSPWmp8ZG4nbYpzSBfewks9BE0nabNG-Yk-IAdkl (signature)",
        (
            "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzZXNzaW9uIjoicVlXMEsxUjZQOG52VTJBa2ZNbkQiLCJleHAiOjE3NjcyMjU2MDB9.VmWVcmXb8JA5SxX8IhSRkv5iec7acF1PRBRLoF6dePLNETauhEZJokMAJEUPAziMKcdbSh1XZiAD5tGZ5oLOckqyjGfv4R4HLgTq3I-NHezCqII9NLVsWdjDKgeRqAZye8ktJqZB-Lnkx7ccbQuyNBnYhH186JeIejePXu0djSTYnJokFbAE84Nu9rqYKW-PjFcRaySHtZOH4ko02zh6DyOyumN1ubWwbF82szq5aWu8EDr-3guoCIhFzQpzbarOUQCGcgTvFIBvTjwWlI0uP2MheP3t-JLCrRvF4okopabywnaSPWmp8ZG4nbYpzSBfewks9BE0nabNG-Yk-IAdkl",
            "eyJzZXNzaW9uIjoicVlXMEsxUjZQOG52VTJBa2ZNbkQiLCJleHAiOjE3NjcyMjU2MDB9",
            "VmWVcmXb8JA5SxX8IhSRkv5iec7acF1PRBRLoF6dePLNETauhEZJokMAJEUPAziMKcdbSh1XZiAD5tGZ5oLOckqyjGfv4R4HLgTq3I-NHezCqII9NLVsWdjDKgeRqAZye8ktJqZB-Lnkx7ccbQuyNBnYhH186JeIejePXu0djSTYnJokFbAE84Nu9rqYKW-PjFcRaySHtZOH4ko02zh6DyOyumN1ubWwbF82szq5aWu8EDr-3guoCIhFzQpzbarOUQCGcgTvFIBvTjwWlI0uP2MheP3t-JLCrRvF4okopabywnaSPWmp8ZG4nbYpzSBfewks9BE0nabNG-Yk-IAdkl",
        ),
        ("token invalide", "(signature)"),
    ),
    Case(
        "jwt",
        "X-Auth: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1aWQiOjQ0MTEsInRlbmFudCI6ImFjbWUifQ.2vbjkYl5uJ-IW0PNiZXWe4FJss8fyX74YC9tngW3OqN",
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1aWQiOjQ0MTEsInRlbmFudCI6ImFjbWUifQ.2vbjkYl5uJ-IW0PNiZXWe4FJss8fyX74YC9tngW3OqN",
            "eyJ1aWQiOjQ0MTEsInRlbmFudCI6ImFjbWUifQ",
            "2vbjkYl5uJ-IW0PNiZXWe4FJss8fyX74YC9tngW3OqN",
        ),
        (),
    ),
    Case(
        "jwt",
        "decoded eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtOGJqdUh6ejBWZkE2IiwiaWF0IjoxNzM1MzgxODAwfQ.LsPcBtn0VASJDLqpr0Jwk735VbpfPbFqdWSaXI6_EK4 in 0.3ms ✅",
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtOGJqdUh6ejBWZkE2IiwiaWF0IjoxNzM1MzgxODAwfQ.LsPcBtn0VASJDLqpr0Jwk735VbpfPbFqdWSaXI6_EK4",
            "eyJzdWIiOiJzdmMtOGJqdUh6ejBWZkE2IiwiaWF0IjoxNzM1MzgxODAwfQ",
            "LsPcBtn0VASJDLqpr0Jwk735VbpfPbFqdWSaXI6_EK4",
        ),
        ("decoded", "in 0.3ms ✅"),
    ),
    # --- secrets: bearer ---
    Case(
        "bearer",
        "Authorization: Bearer 0tQ4wc9Kv9vNN6mW96QScOpdltkhgLKVBPuDLBOS",
        ("0tQ4wc9Kv9vNN6mW96QScOpdltkhgLKVBPuDLBOS", "gLKVBPuDLBOS"),
        (),
    ),
    Case(
        "bearer",
        'curl -H "Authorization: Bearer dXFKAjMRCx0_jNvRjrjqS7Owt2O1pWAg" https://api.example.com/v1/think',
        ("dXFKAjMRCx0_jNvRjrjqS7Owt2O1pWAg", "S7Owt2O1pWAg"),
        ("curl -H",),
    ),
    Case(
        "bearer",
        "> GET /v1/metrics HTTP/1.1\n> Host: localhost:8080\n> authorization: bearer bsZGP9MMmHSoavWBGMguP0fVum2cKr79zZFvDEXjpYJAFFDT\n> Accept: */*\n",
        ("bsZGP9MMmHSoavWBGMguP0fVum2cKr79zZFvDEXjpYJAFFDT", "DEXjpYJAFFDT"),
        ("HTTP/1.1", "Accept: */*"),
    ),
    Case(
        "bearer",
        'headers = {"Authorization": "Bearer MTYfvQR2c2AwcCRBOf3YZzFpvt6RJDb5I1iA", "Content-Type": "application/json"}',
        ("MTYfvQR2c2AwcCRBOf3YZzFpvt6RJDb5I1iA", "vt6RJDb5I1iA"),
        ('"Content-Type": "application/json"',),
    ),
    Case(
        "bearer",
        "2025-12-28T10:30:00Z DEBUG request headers: Authorization=Bearer 1kO41Az72-KGSbYIAJ8owJvsaTXOjN5tkbEngxxpv6nyUcPM3td-go_fobD_6xXd status=401",
        ("1kO41Az72-KGSbYIAJ8owJvsaTXOjN5tkbEngxxpv6nyUcPM3td-go_fobD_6xXd", "go_fobD_6xXd"),
        ("2025-12-28T10:30:00Z", "DEBUG", "status=401"),
    ),
    Case(
        "bearer",
        "http --auth-type=bearer --auth mt0rPS8JY7SiKYjduD3IPA7ALCYNUeQmop7S4F5p POST :8080/compare",
        ("mt0rPS8JY7SiKYjduD3IPA7ALCYNUeQmop7S4F5p", "UeQmop7S4F5p"),
        ("--auth-type=bearer",),
    ),
    Case(
        "bearer",
        "认证头 Authorization: Bearer Qukb0Cx5rOkonjX00F9phMavN09fVHTu54Xq0to9KzWw 无效",
        ("Qukb0Cx5rOkonjX00F9phMavN09fVHTu54Xq0to9KzWw", "54Xq0to9KzWw"),
        ("认证头", "无效"),
    ),
    # --- secrets: pem_private_key ---
    Case(
        "pem_private_key",
        "key loaded:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEALLUHW7pzUQyq43KzFLY8Ple8Pu98Xx1yNMyYeNwPYqjKfi5Y\nKSmUgk76+TcagATntYt3pzUEoueisygQOp4DBEcx2czGy0OwO8XZWb0sHfhdyI0p\nqJI8AQV9W+R2ci3IdvmVLepBF348qOXpaWZUWVyuRFxS+aitch/IIt0o46t4D823\nJ7F5DzIuQCBnptNvdKidTjtOOMrCa8Z+zzeeEirVr1BetC72gcSVmLzhseswpis3\nwLKuxzEc7dC0tH3j/LFmBB4QTnyagxhvADpsSwqXWB8e94LKVRwV77z2o7VHk7wQ\nszF4IovzJV21LcwQ62+4B03RT3qL93Gt4nZlfXpUtII1F3mo6Fz4dtZ0+c5cBXk7\ngwSiWMeeHlgaQ+eFwzRhr8Xy0n39pn==\n-----END RSA PRIVATE KEY-----\nprofile=paranoid",
        (
            "MIIEowIBAAKCAQEALLUHW7pzUQyq43KzFLY8Ple8Pu98Xx1yNMyYeNwPYqjKfi5Y",
            "KSmUgk76+TcagATntYt3pzUEoueisygQOp4DBEcx2czGy0OwO8XZWb0sHfhdyI0p",
            "qJI8AQV9W+R2ci3IdvmVLepBF348qOXpaWZUWVyuRFxS+aitch/IIt0o46t4D823",
            "J7F5DzIuQCBnptNvdKidTjtOOMrCa8Z+zzeeEirVr1BetC72gcSVmLzhseswpis3",
            "wLKuxzEc7dC0tH3j/LFmBB4QTnyagxhvADpsSwqXWB8e94LKVRwV77z2o7VHk7wQ",
            "szF4IovzJV21LcwQ62+4B03RT3qL93Gt4nZlfXpUtII1F3mo6Fz4dtZ0+c5cBXk7",
            "gwSiWMeeHlgaQ+eFwzRhr8Xy0n39pn==",
        ),
        ("key loaded:", "profile=paranoid"),
    ),
    Case(
        "pem_private_key",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIZwjrFWqOZWNXZlFTvXWMdYHuq6oiqK8Cx4pEKlpGuvEi5gg7abKwBhS\ndQ+WdGNhxlYaZDQGlyTKVdaIvQzVh7a+EDT1q65/C5RQdWXik6fP+cCCVpUmxpUc\nVKZq5wfFR+NrFvCrlM==\n-----END EC PRIVATE KEY-----\n",
        (
            "MHcCAQEEIZwjrFWqOZWNXZlFTvXWMdYHuq6oiqK8Cx4pEKlpGuvEi5gg7abKwBhS",
            "dQ+WdGNhxlYaZDQGlyTKVdaIvQzVh7a+EDT1q65/C5RQdWXik6fP+cCCVpUmxpUc",
            "VKZq5wfFR+NrFvCrlM==",
        ),
        (),
    ),
    Case(
        "pem_private_key",
        "cat ~/.ssh/id_ed25519\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAxyxaOYyR\nGIuG2GMwwVG9mIsAvv3wNVh4UqluszvoRYkcnMZTh3BcPWtRohiK1wjMvLzKidk9\nbjZRk6suVIlzRqkiXyXk8vjMBniUq4Uxkf3QrXb+ektdz3xhjnhXi5mvTD1Bwvir\nWmaJO5iyqKBt2zkNlLkRb00V/ZdLMMeWxUlfoSB+Z3nQOkfuigwIAp1uo99Xyoei\niXySxUcOgDExLfLcqTOsJSHyVIHxAvQxTGEpiM==\n-----END OPENSSH PRIVATE KEY-----\n",
        (
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAxyxaOYyR",
            "GIuG2GMwwVG9mIsAvv3wNVh4UqluszvoRYkcnMZTh3BcPWtRohiK1wjMvLzKidk9",
            "bjZRk6suVIlzRqkiXyXk8vjMBniUq4Uxkf3QrXb+ektdz3xhjnhXi5mvTD1Bwvir",
            "WmaJO5iyqKBt2zkNlLkRb00V/ZdLMMeWxUlfoSB+Z3nQOkfuigwIAp1uo99Xyoei",
            "iXySxUcOgDExLfLcqTOsJSHyVIHxAvQxTGEpiM==",
        ),
        (),
    ),
    Case(
        "pem_private_key",
        '{"type": "service_account", "project_id": "demo-project", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQX1CnCQB3XhMz+7\\noRLM/yKMJDHaoTRilT2a2CP6O+7FJDSAGH7LJgdE+Jwn8kbc2ZOeeNdo5OI9RSgt\\nH3wOJWx7MUMVflfM30mIcLRT4GtCY7hSv3CCuGV4QbGeY1fh1hBi7YAQka+WKQmQ\\n0HPiBu1eFlwdFPi61Zlf3NbYijYnhhk68BYQN856mq9Iy48SwCZqvf0z6twn3oOT\\nGR1qvNVWRt8Dth6NAe7eKG0SHAi+I3Oqtify9Oux7g4euPcD/eo1/kIOnbXI/8ZY\\nUcl1csj5LVv3tVQ3wXaP1U==\\n-----END PRIVATE KEY-----\\n", "client_id": "1234567890"}',
        (
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQX1CnCQB3XhMz+7",
            "oRLM/yKMJDHaoTRilT2a2CP6O+7FJDSAGH7LJgdE+Jwn8kbc2ZOeeNdo5OI9RSgt",
            "H3wOJWx7MUMVflfM30mIcLRT4GtCY7hSv3CCuGV4QbGeY1fh1hBi7YAQka+WKQmQ",
            "0HPiBu1eFlwdFPi61Zlf3NbYijYnhhk68BYQN856mq9Iy48SwCZqvf0z6twn3oOT",
            "GR1qvNVWRt8Dth6NAe7eKG0SHAi+I3Oqtify9Oux7g4euPcD/eo1/kIOnbXI/8ZY",
            "Ucl1csj5LVv3tVQ3wXaP1U==",
        ),
        ('"type": "service_account"', '"client_id"'),
    ),
    Case(
        "pem_private_key",
        'PRIVATE_KEY="-----BEGIN RSA PRIVATE KEY-----\\nMIICXAIBAAKBgQCsb/Peq5ItB/E0hsaBI09ZJIbFirdpl0oLfu/6BW1oIFSyM1+D\\nLk6ylEf/iPzocoOvTZVBf2HAoZ2CaEksaUMlVJSpbXZ7Oy803CfWoG+5QTeLHhrY\\nungVNGDW+0Aj7y2MV97QOEkgUD+6FNOQWzTlQyEhObVBCbrXSAez7kiOhsKvfMhI\\n4rXt1T7+vD5vf2NJZiFJ7d21k4PGlf951k==\\n-----END RSA PRIVATE KEY-----"',
        (
            "MIICXAIBAAKBgQCsb/Peq5ItB/E0hsaBI09ZJIbFirdpl0oLfu/6BW1oIFSyM1+D",
            "Lk6ylEf/iPzocoOvTZVBf2HAoZ2CaEksaUMlVJSpbXZ7Oy803CfWoG+5QTeLHhrY",
            "ungVNGDW+0Aj7y2MV97QOEkgUD+6FNOQWzTlQyEhObVBCbrXSAez7kiOhsKvfMhI",
            "4rXt1T7+vD5vf2NJZiFJ7d21k4PGlf951k==",
        ),
        (),
    ),
    Case(
        "pem_private_key",
        "tls:\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIIG/gIBADANBgkqhkiG9w0BAQEFAASCBugwggbkAgEAAoIBgQ3KGqzbrNJiPJ6Z\n    NUct+SmF1MIeZ/yoUPfH//UfkCXeol0/OvjFSwmaSBh2Ul1pXu/hdLMW/WhddWnc\n    H3Ceo9JlviaRKtzzASPhhTma+xa45j8RkIq+DfnlFtmrXdysbu+8Jy+xYgg00dQ8\n    ZCpaXk9EuNn+Vvrtwa7A5H6iNEqdUW9O91u78lQNsCV7DHwDf3nY9YF0zAGf1bJ1\n    s6d16iEf+cfpJiY7YERQXgi81K==\n    -----END PRIVATE KEY-----\n  cert_file: server.crt\n",
        (
            "MIIG/gIBADANBgkqhkiG9w0BAQEFAASCBugwggbkAgEAAoIBgQ3KGqzbrNJiPJ6Z",
            "NUct+SmF1MIeZ/yoUPfH//UfkCXeol0/OvjFSwmaSBh2Ul1pXu/hdLMW/WhddWnc",
            "H3Ceo9JlviaRKtzzASPhhTma+xa45j8RkIq+DfnlFtmrXdysbu+8Jy+xYgg00dQ8",
            "ZCpaXk9EuNn+Vvrtwa7A5H6iNEqdUW9O91u78lQNsCV7DHwDf3nY9YF0zAGf1bJ1",
            "s6d16iEf+cfpJiY7YERQXgi81K==",
        ),
        ("tls:", "cert_file"),
    ),
    Case(
        "pem_private_key",
        "Schlüssel versehentlich geloggt: -----BEGIN EC PRIVATE KEY-----\\nMHQCAQEEIN3q+C2qrrZP7/+/CJWXaNGQcH/gNHtrqG14bJGjLWZh6ztDIjGMgFyg\\nN0Sw26SNIHgHMAEbvY8VKB1zpKIlxndje1PSDJIEBPOFrGxDyphYJPq3Q3dZwBGI\\nCYHI5RDYOxk2OE==\\n-----END EC PRIVATE KEY----- – bitte rotieren",
        (
            "MHQCAQEEIN3q+C2qrrZP7/+/CJWXaNGQcH/gNHtrqG14bJGjLWZh6ztDIjGMgFyg",
            "N0Sw26SNIHgHMAEbvY8VKB1zpKIlxndje1PSDJIEBPOFrGxDyphYJPq3Q3dZwBGI",
            "CYHI5RDYOxk2OE==",
        ),
        ("Schlüssel versehentlich geloggt", "bitte rotieren"),
    ),
    # --- secrets: url_credentials ---
    Case(
        "url_credentials",
        "DATABASE_URL=postgres://admin:hunter2@db.internal:5432/app",
        ("admin:hunter2", "hunter2"),
        (),
    ),
    Case(
        "url_credentials",
        "could not connect to mysql://svc_rkd:4SdwSO1E3Iy6mInI@10.0.3.4:3306/telemetry: timeout",
        ("svc_rkd:4SdwSO1E3Iy6mInI", "4SdwSO1E3Iy6mInI", "10.0.3.4"),
        ("could not connect to", "timeout"),
    ),
    Case(
        "url_credentials",
        "git clone https://jdoe:Tr0ub4dor%263@git.example.com/team/repo.git",
        ("jdoe:Tr0ub4dor%263", "Tr0ub4dor%263"),
        ("git clone",),
    ),
    Case(
        "url_credentials",
        "redis://:S3cretRedisPassw0rd@cache.lan:6379/0 unreachable (ECONNREFUSED)",
        ("S3cretRedisPassw0rd",),
        ("unreachable", "ECONNREFUSED"),
    ),
    Case(
        "url_credentials",
        '{"broker_url": "amqp://rabbit:pa55w0rd-Q7@mq.example.org:5672//", "retries": 3}',
        ("rabbit:pa55w0rd-Q7", "pa55w0rd-Q7"),
        ('"retries": 3',),
    ),
    Case(
        "url_credentials",
        "Proxy https://mueller:Geheim!2024@proxy.firma.example:3128 abgelehnt",
        ("mueller:Geheim!2024", "Geheim!2024"),
        ("Proxy", "abgelehnt"),
    ),
    Case(
        "url_credentials",
        "mongodb+srv://analytics:xK9vQ2mLp4Rt@cluster0.example.mongodb.net/?retryWrites=true",
        ("analytics:xK9vQ2mLp4Rt", "xK9vQ2mLp4Rt"),
        (),
    ),
    Case(
        "url_credentials",
        "ftp://anna.k:wint3r-is-c0ming@files.example.net/upload/ → 530 Login incorrect",
        ("anna.k:wint3r-is-c0ming", "wint3r-is-c0ming"),
        ("530 Login incorrect",),
    ),
    # --- secrets: key_assignment ---
    Case(
        "key_assignment",
        "ANTHROPIC_API_KEY=sk-ant-api03-h3YLvk30xAh_bAJ5fV02UmgBoEUzjYI7yRqdkUR_S2cBWgAhS3ryp1kW5ZpK33w6exdT90q_jRtj4J6wqwinvAFDYNMiCAA\nLOG_LEVEL=debug\n",
        (
            "sk-ant-api03-h3YLvk30xAh_bAJ5fV02UmgBoEUzjYI7yRqdkUR_S2cBWgAhS3ryp1kW5ZpK33w6exdT90q_jRtj4J6wqwinvAFDYNMiCAA",
            "nvAFDYNMiCAA",
        ),
        ("ANTHROPIC_API_KEY", "LOG_LEVEL=debug"),
    ),
    Case(
        "key_assignment",
        "DB_PASSWORD=correct-horse-battery-staple\nDB_HOST_PORT=5432\n",
        ("correct-horse-battery-staple",),
        ("DB_PASSWORD", "DB_HOST_PORT=5432"),
    ),
    Case(
        "key_assignment",
        'OPENAI_API_KEY="6I8Yfnw0mfBJuiMkMDFLMROW"',
        ("6I8Yfnw0mfBJuiMkMDFLMROW",),
        ("OPENAI_API_KEY",),
    ),
    Case(
        "key_assignment",
        'database:\n  user: rkd\n  password: "4zEosBCVP9PvXY3yiS1c9hPx"\n  pool_size: 10\n',
        ("4zEosBCVP9PvXY3yiS1c9hPx",),
        ("database:", "pool_size: 10"),
    ),
    Case(
        "key_assignment",
        '{"api_token": "FG0Tmk9jKPAbnL3QZ2Tp75M1", "profile": "balanced", "timeout_ms": 2500}',
        ("FG0Tmk9jKPAbnL3QZ2Tp75M1",),
        ('"api_token"', '"profile": "balanced"', '"timeout_ms": 2500'),
    ),
    Case("key_assignment", "password=Sommer2024! retry=3", ("Sommer2024!",), ("retry=3",)),
    Case(
        "key_assignment",
        "SECRET_KEY = '29Yn5xLXmDQUcg281nSpnmJr'  # django settings",
        ("29Yn5xLXmDQUcg281nSpnmJr",),
        ("SECRET_KEY", "# django settings"),
    ),
    Case(
        "key_assignment",
        "export MYSQL_ROOT_PASSWORD=Pl3aseChangeMe!",
        ("Pl3aseChangeMe!",),
        ("export", "MYSQL_ROOT_PASSWORD"),
    ),
    Case(
        "key_assignment",
        "api_key: KXm3xMKCCaO5U4EPs3ojxMWz\nmodel: claude-3-5-sonnet-20241022\n",
        ("KXm3xMKCCaO5U4EPs3ojxMWz",),
        ("api_key", "model: claude-3-5-sonnet-20241022"),
    ),
    Case(
        "key_assignment",
        "client_secret=9f8e7d6c5b4a39281706f5e4d3c2b1a0aa&grant_type=client_credentials",
        ("9f8e7d6c5b4a39281706f5e4d3c2b1a0aa",),
        ("grant_type=client_credentials",),
    ),
    Case(
        "key_assignment",
        "Passwort=Kätzchen#2024 (zu schwach)",
        ("Kätzchen#2024",),
        ("Passwort", "(zu schwach)"),
    ),
    Case(
        "key_assignment",
        'auth_token = "aKSv86sXY4tQdqT2VLvvqA4p"',
        ("aKSv86sXY4tQdqT2VLvvqA4p",),
        ("auth_token",),
    ),
    Case(
        "key_assignment",
        "[smtp]\nhost = mail.example.com\npassword = s3nd-me-mail-pl3ase\nport = 587\n",
        ("s3nd-me-mail-pl3ase",),
        ("[smtp]", "port = 587"),
    ),
    Case(
        "key_assignment",
        '$env:REDIS_PASSWORD = "r3d1s-Pa$$-Q4"',
        ("r3d1s-Pa$$-Q4",),
        ("REDIS_PASSWORD",),
    ),
    Case(
        "key_assignment",
        "2025-12-28T10:30:00Z DEBUG config loaded: webhook_secret=whsec_Kq8m2Vx7Lp3Rt9Zb4Nc6Yd1F",
        ("whsec_Kq8m2Vx7Lp3Rt9Zb4Nc6Yd1F",),
        ("2025-12-28T10:30:00Z", "DEBUG", "config loaded"),
    ),
    Case(
        "key_assignment",
        "パスワード: password=ひみつ-abc-1234 で設定済み",
        ("ひみつ-abc-1234",),
        ("パスワード", "で設定済み"),
    ),
    # --- secrets: cli_password_flag ---
    Case(
        "cli_password_flag",
        "mysql -u root -phunter2 telemetry",
        ("hunter2",),
        ("mysql", "telemetry"),
    ),
    Case(
        "cli_password_flag",
        "pg_dump --host=db --username=rkd --password Xy7!kLm9qR app > dump.sql",
        ("Xy7!kLm9qR",),
        ("pg_dump", "--username=rkd"),
    ),
    Case(
        "cli_password_flag",
        "rkd login --password=CorrectHorse42 --profile quick",
        ("CorrectHorse42",),
        ("rkd login", "--profile quick"),
    ),
    Case(
        "cli_password_flag",
        "deploy.sh --token 5pCHt7kw7qm1tnbdRIq2 --env staging",
        ("5pCHt7kw7qm1tnbdRIq2",),
        ("deploy.sh", "--env staging"),
    ),
    Case(
        "cli_password_flag",
        'rkd think --api-key 8XqgP5jaWTBlalyBz7QQ --profile deep "why is the sky blue?"',
        ("8XqgP5jaWTBlalyBz7QQ",),
        ("rkd think", "--profile deep", "why is the sky blue?"),
    ),
    Case(
        "cli_password_flag",
        "Befehl fehlgeschlagen: backup-tool --api-key=JQme63Mjr6doQWvT53lx --verbose",
        ("JQme63Mjr6doQWvT53lx",),
        ("Befehl fehlgeschlagen", "--verbose"),
    ),
    Case(
        "cli_password_flag",
        "sshpass -p 'Sunny-Day-77' ssh -o StrictHostKeyChecking=no staging",
        ("Sunny-Day-77",),
        ("sshpass", "StrictHostKeyChecking=no"),
    ),
    Case(
        "cli_password_flag",
        "mysqladmin -u admin -pMyS3cr3tP4ss status",
        ("MyS3cr3tP4ss",),
        ("mysqladmin", "status"),
    ),
    Case(
        "cli_password_flag",
        "argv: ['rkd', 'compare', '--password', 'tr1cky-pa55', '--json']",
        ("tr1cky-pa55",),
        ("'compare'", "'--json'"),
    ),
    # --- secrets: high_entropy ---
    Case(
        "high_entropy",
        "resuming upload session IXZDqcDuoHE7KFQb3FMLgE71daTVhKM3",
        ("IXZDqcDuoHE7KFQb3FMLgE71daTVhKM3", "gE71daTVhKM3"),
        ("resuming upload session",),
    ),
    Case(
        "high_entropy",
        "invite link code QbkxSFcBbe3ih08B709W3A7IRarqdVA9nNR2Uzt9 expires in 24h",
        ("QbkxSFcBbe3ih08B709W3A7IRarqdVA9nNR2Uzt9", "dVA9nNR2Uzt9"),
        ("invite link code", "expires in 24h"),
    ),
    Case(
        "high_entropy",
        '{"nonce": "s8IgZZ1CaQSf4d8OVkBdKPPzD0KyOXyWuJV3viKiu3sMQJLR", "event": "command_invoked", "profile": "quick"}',
        ("s8IgZZ1CaQSf4d8OVkBdKPPzD0KyOXyWuJV3viKiu3sMQJLR", "viKiu3sMQJLR"),
        ('"event": "command_invoked"', '"profile": "quick"'),
    ),
    Case(
        "high_entropy",
        "2025-12-28T10:30:00Z INFO cursor JDPu3FnV7I3GGT5Fi6WvR2FZ8V34E075tV71 saved",
        ("JDPu3FnV7I3GGT5Fi6WvR2FZ8V34E075tV71", "8V34E075tV71"),
        ("2025-12-28T10:30:00Z", "INFO", "saved"),
    ),
    Case(
        "high_entropy",
        "blob w5bKfnomnqGuNKH/x5nX+HdSY/Nw3ZnTvH2qc3YUoGk0== truncated",
        ("w5bKfnomnqGuNKH/x5nX+HdSY/Nw3ZnTvH2qc3YUoGk0==", "2qc3YUoGk0=="),
        ("truncated",),
    ),
    Case(
        "high_entropy",
        "Sitzungsschlüssel 9IPSDsfmt4ZnFgC5344mmNc3X49jHjgLP1sC9SCOypDjHhSNHoXMjAVFJPAQeUv8 erneuert",
        ("9IPSDsfmt4ZnFgC5344mmNc3X49jHjgLP1sC9SCOypDjHhSNHoXMjAVFJPAQeUv8", "jAVFJPAQeUv8"),
        ("Sitzungsschlüssel", "erneuert"),
    ),
    Case(
        "high_entropy",
        "copy this one-time code into the app: hQ34VbIYAS5sQj7oxAidZwprWQc7xzZsr 🔐",
        ("hQ34VbIYAS5sQj7oxAidZwprWQc7xzZsr", "wprWQc7xzZsr"),
        ("copy this one-time code into the app", "🔐"),
    ),
    # --- paths: posix_path ---
    Case(
        "posix_path",
        'File "/home/mkowalczyk/projects/orion-billing/src/app.py", line 12, in main',
        ("mkowalczyk", "/home/mkowalczyk/projects/orion-billing"),
        ("line 12, in main",),
    ),
    Case(
        "posix_path",
        "FileNotFoundError: [Errno 2] No such file or directory: '/Users/bthornbury/Documents/tax-2024/return.pdf'",
        ("bthornbury", "/Users/bthornbury/Documents/tax-2024"),
        ("FileNotFoundError", "[Errno 2]"),
    ),
    Case(
        "posix_path",
        "permissions 0644 for /root/acme-deploy/secrets.env are too open",
        ("/root/acme-deploy",),
        ("permissions 0644 for", "are too open"),
    ),
    Case(
        "posix_path",
        "sqlite3.OperationalError: unable to open database file /var/lib/rkd/users/svenlindqvist/events.db",
        ("svenlindqvist", "/var/lib/rkd/users/svenlindqvist"),
        ("sqlite3.OperationalError",),
    ),
    Case(
        "posix_path",
        "collected 12 items in /tmp/pytest-of-okonkwoe/pytest-12/test_emit0",
        ("okonkwoe", "/tmp/pytest-of-okonkwoe"),
        ("collected 12 items in",),
    ),
    Case(
        "posix_path",
        "Fehler beim Öffnen von /home/jürgen/Dokumente/steuer.ods",
        ("jürgen", "/home/jürgen/Dokumente"),
        ("Fehler beim Öffnen von",),
    ),
    Case(
        "posix_path",
        "Impossible d'ouvrir /Users/elodie.marchand/Bureau/contrat.pdf : permission refusée",
        ("elodie.marchand", "/Users/elodie.marchand/Bureau"),
        ("Impossible d'ouvrir", "permission refusée"),
    ),
    Case(
        "posix_path",
        "cache at /Users/dsatoshi/Library/Caches/rkd/events.sqlite is 1.5 GB",
        ("dsatoshi", "/Users/dsatoshi/Library"),
        ("cache at", "is 1.5 GB"),
    ),
    Case(
        "posix_path",
        "2025-12-28T10:30:00Z ERROR could not parse /home/rahmadi/.config/rkd/config.toml: invalid TOML",
        ("rahmadi", "/home/rahmadi/.config"),
        ("2025-12-28T10:30:00Z", "ERROR", "invalid TOML"),
    ),
    Case(
        "posix_path",
        '{"cwd": "/home/ltrevisan/code/quasar-ml", "command": "think", "exit_code": 1}',
        ("ltrevisan", "/home/ltrevisan/code/quasar-ml"),
        ('"command": "think"', '"exit_code": 1'),
    ),
    Case(
        "posix_path",
        "rsync: /media/fkaminski/USB-STICK/backup.tar: No space left on device",
        ("fkaminski", "/media/fkaminski/USB-STICK"),
        ("No space left on device",),
    ),
    Case(
        "posix_path",
        "ModuleNotFoundError raised from /mnt/c/Users/vhernandez/dev/tools/run.py",
        ("vhernandez", "/mnt/c/Users/vhernandez/dev"),
        ("ModuleNotFoundError",),
    ),
    Case(
        "posix_path",
        "ファイル /home/sato-kenji/ドキュメント/企画書.md が見つかりません",
        ("sato-kenji", "/home/sato-kenji/ドキュメント"),
        ("ファイル", "が見つかりません"),
    ),
    # --- paths: windows_path ---
    Case(
        "windows_path",
        "database at C:\\Users\\agarcia\\AppData\\Local\\rkd\\events.db is locked",
        ("agarcia", "C:\\Users\\agarcia\\AppData"),
        ("database at", "is locked"),
    ),
    Case(
        "windows_path",
        '{"path": "C:\\\\Users\\\\nwojcik\\\\Documents\\\\payroll.xlsx", "size": 1234}',
        ("nwojcik", "C:\\\\Users\\\\nwojcik\\\\Documents"),
        ('"size": 1234',),
    ),
    Case(
        "windows_path",
        "loading C:/Users/hkimura/projects/tengu/main.py (gigathink)",
        ("hkimura", "C:/Users/hkimura/projects/tengu"),
        ("loading", "(gigathink)"),
    ),
    Case(
        "windows_path",
        "cannot read \\\\fs01\\home$\\rpatel\\notes.txt: access denied",
        ("rpatel", "\\\\fs01\\home$\\rpatel"),
        ("cannot read", "access denied"),
    ),
    Case(
        "windows_path",
        '  File "C:\\Users\\okeller\\venv\\Lib\\site-packages\\rkd\\client.py", line 88, in emit',
        ("okeller", "C:\\Users\\okeller\\venv"),
        ("line 88, in emit",),
    ),
    Case(
        "windows_path",
        "PermissionError: [WinError 5] Access is denied: 'C:\\\\Users\\\\sbianchi\\\\AppData\\\\Roaming\\\\rkd\\\\lock'",
        ("sbianchi", "C:\\\\Users\\\\sbianchi\\\\AppData"),
        ("PermissionError", "[WinError 5] Access is denied"),
    ),
    Case(
        "windows_path",
        "保存先: C:\\Users\\田中太郎\\Desktop\\報告書.docx",
        ("田中太郎", "C:\\Users\\田中太郎\\Desktop"),
        ("保存先",),
    ),
    Case(
        "windows_path",
        "downloaded to c:\\users\\mdubois\\downloads\\setup.exe (100%)",
        ("mdubois", "c:\\users\\mdubois\\downloads"),
        ("downloaded to", "(100%)"),
    ),
    Case(
        "windows_path",
        "PS C:\\Users\\ezhang\\source\\repos\\atlas> rkd think --profile quick",
        ("ezhang", "C:\\Users\\ezhang\\source\\repos\\atlas"),
        ("rkd think --profile quick",),
    ),
    Case(
        "windows_path",
        "ERROR 2025-12-28 10:30:00+01:00 D:\\Users\\wkowalski\\Projekte\\Angebot.xlsx gesperrt",
        ("wkowalski", "D:\\Users\\wkowalski\\Projekte"),
        ("ERROR", "2025-12-28 10:30:00+01:00", "gesperrt"),
    ),
    Case(
        "windows_path",
        "\\\\nas-buero\\Freigaben\\Personal\\hschulze\\Gehalt_2025.pdf kopiert ✅",
        ("hschulze", "\\\\nas-buero\\Freigaben\\Personal\\hschulze"),
        ("kopiert ✅",),
    ),
    # --- paths: tilde_path ---
    Case(
        "tilde_path",
        'Traceback: File "~/projects/nightjar-ledger/src/main.py", line 7',
        ("nightjar-ledger", "~/projects/nightjar-ledger"),
        ("Traceback", "line 7"),
    ),
    Case(
        "tilde_path",
        "sourced ~mthorneycroft/.bashrc before running rkd",
        ("mthorneycroft", "~mthorneycroft/.bashrc"),
        ("sourced", "before running rkd"),
    ),
    Case(
        "tilde_path",
        "draft saved to ~/clients/hartwell-pharma/contract-draft.md",
        ("hartwell-pharma", "~/clients/hartwell-pharma"),
        ("draft saved to",),
    ),
    Case(
        "tilde_path",
        "cd ~/work/zephyr-internal && rkd think --profile balanced",
        ("zephyr-internal", "~/work/zephyr-internal"),
        ("rkd think --profile balanced",),
    ),
    Case(
        "tilde_path",
        "serving ~rbergstrom/public_html/index.html (HTTP 200)",
        ("rbergstrom", "~rbergstrom/public_html"),
        ("serving", "HTTP 200"),
    ),
    Case(
        "tilde_path",
        "Datei ~/Bewerbungen/Schneider-Lebenslauf.pdf nicht gefunden",
        ("Schneider-Lebenslauf", "~/Bewerbungen/Schneider-Lebenslauf.pdf"),
        ("Datei", "nicht gefunden"),
    ),
    Case(
        "tilde_path",
        "loaded .env from ~/src/falcon-payments/.env (3 keys)",
        ("falcon-payments", "~/src/falcon-payments"),
        ("loaded .env from", "(3 keys)"),
    ),
    Case(
        "tilde_path",
        "スクリプト ~/研究/論文ドラフト/analysis.py を実行",
        ("論文ドラフト", "~/研究/論文ドラフト"),
        ("スクリプト", "を実行"),
    ),
    # --- paths: quoted_path ---
    Case(
        "quoted_path",
        'open("/Users/hvandermeer/My Documents/q3 plan.docx") failed: EACCES',
        ("hvandermeer", "/Users/hvandermeer/My Documents"),
        ("failed: EACCES",),
    ),
    Case(
        "quoted_path",
        "config written to 'C:\\Users\\Mary Ellen Crowley\\AppData\\Roaming\\rkd\\config.toml'",
        ("Mary Ellen Crowley", "Crowley"),
        ("config written to",),
    ),
    Case(
        "quoted_path",
        'Fichier introuvable : "C:\\Users\\Jean-Pierre Lefèvre\\Documents\\Devis 2025.xlsx"',
        ("Jean-Pierre Lefèvre", "Lefèvre"),
        ("Fichier introuvable",),
    ),
    Case(
        "quoted_path",
        "'/home/ykowalski/Google Drive/Shared/budget 2025.xlsx' is 1.5 GB",
        ("ykowalski", "/home/ykowalski/Google Drive"),
        ("is 1.5 GB",),
    ),
    Case(
        "quoted_path",
        '{"file": "C:\\\\Users\\\\Priya Raman\\\\OneDrive - Contoso\\\\notes.txt", "op": "read"}',
        ("Priya Raman", "Raman"),
        ('"op": "read"',),
    ),
    Case(
        "quoted_path",
        'uploading "/Users/tnowakowski/Library/Mobile Documents/com~apple~CloudDocs/Pitch Deck.key" (42%)',
        ("tnowakowski", "/Users/tnowakowski/Library/Mobile Documents"),
        ("uploading", "(42%)"),
    ),
    Case(
        "quoted_path",
        "open '/Users/akira.yamamoto/Desktop/見積書 最終版.pdf' に失敗しました",
        ("akira.yamamoto", "/Users/akira.yamamoto/Desktop"),
        ("に失敗しました",),
    ),
    Case(
        "quoted_path",
        '  File "/Users/gdimitrov/Dev Projects/kestrel app/run.py", line 3, in <module>',
        ("gdimitrov", "/Users/gdimitrov/Dev Projects/kestrel app"),
        ("line 3, in <module>",),
    ),
    Case(
        "quoted_path",
        'rkd compare --input "C:\\Users\\Sofia Oliveira\\Meus Documentos\\prompts.txt" --profile deep',
        ("Sofia Oliveira", "Oliveira"),
        ("rkd compare --input", "--profile deep"),
    ),
    # --- url ---
    Case(
        "url",
        "fetched https://internal.example.com/customers/4411/invoices?token=abc123XYZ#line-7 in 812ms",
        ("/customers/4411/invoices", "token=abc123XYZ", "line-7"),
        ("fetched", "in 812ms"),
    ),
    Case(
        "url",
        "POST https://api.anthropic.com/v1/messages?beta=true failed with overloaded_error",
        ("/v1/messages", "beta=true"),
        ("https://api.anthropic.com", "overloaded_error"),
    ),
    Case(
        "url",
        "GET https://api.openai.com/v1/chat/completions -> 429 Too Many Requests",
        ("/v1/chat/completions",),
        ("https://api.openai.com", "429 Too Many Requests"),
    ),
    Case(
        "url",
        "stream https://generativelanguage.googleapis.com/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse interrupted",
        ("/v1beta/models/gemini-1.5-pro:streamGenerateContent", "alt=sse"),
        ("https://generativelanguage.googleapis.com", "interrupted"),
    ),
    Case(
        "url",
        "downloading https://huggingface.co/acme-private/llama-ft-customer-x/resolve/main/config.json (HTTP 401)",
        (
            "/acme-private/llama-ft-customer-x/resolve/main/config.json",
            "acme-private/llama-ft-customer-x",
        ),
        ("https://huggingface.co", "HTTP 401"),
    ),
    Case(
        "url",
        "see https://github.com/acme-corp/secret-roadmap/issues/42#issuecomment-1234567 for details",
        ("/acme-corp/secret-roadmap/issues/42", "issuecomment-1234567"),
        ("https://github.com", "for details"),
    ),
    Case(
        "url",
        "visit https://pypi.org/project/rkd-internal-fork/0.3.1/#history before upgrading",
        ("/project/rkd-internal-fork/0.3.1/", "history"),
        ("https://pypi.org", "before upgrading"),
    ),
    Case(
        "url",
        "dashboard http://grafana.corp-example.net:3000/d/abc123/latency?orgId=1&from=now-6h is slow",
        ("/d/abc123/latency", "orgId=1&from=now-6h"),
        ("dashboard", "is slow"),
    ),
    Case(
        "url",
        "ダッシュボード https://dash.example.org/team/ops/board/9931?view=compact を開けません",
        ("/team/ops/board/9931", "view=compact"),
        ("ダッシュボード", "を開けません"),
    ),
    Case(
        "url",
        '{"referrer": "https://shop.example.de/account/orders/88213?session=Zq81kLm#review", "status": 200}',
        ("/account/orders/88213", "session=Zq81kLm", "review"),
        ('"status": 200',),
    ),
    # --- keep: negative cases, nothing may be removed ---
    Case("keep", "rkd think --profile balanced", (), ("think", "--profile balanced")),
    Case(
        "keep",
        "command=compare profile=deep duration_ms=2500",
        (),
        ("command=compare", "profile=deep", "duration_ms=2500"),
    ),
    Case(
        "keep",
        "metrics exported: 1,234 tokens in 2500ms",
        (),
        ("metrics exported", "1,234 tokens", "2500ms"),
    ),
    Case(
        "keep",
        "profile paranoid enabled ThinkTools: gigathink, laserlogic, bedrock, proofguard, brutalhonesty",
        (),
        ("paranoid", "gigathink", "laserlogic", "bedrock", "proofguard", "brutalhonesty"),
    ),
    Case(
        "keep",
        "model=claude-3-5-sonnet-20241022 input_tokens=1532 output_tokens=418",
        (),
        ("claude-3-5-sonnet-20241022", "input_tokens=1532", "output_tokens=418"),
    ),
    Case(
        "keep",
        "fallback from claude-3-opus-20240229 to gpt-4o-2024-08-06",
        (),
        ("claude-3-opus-20240229", "gpt-4o-2024-08-06"),
    ),
    Case(
        "keep",
        "gpt-4o-mini and o1-preview both returned HTTP 429",
        (),
        ("gpt-4o-mini", "o1-preview", "HTTP 429"),
    ),
    Case("keep", "gemini-1.5-pro-002 responded in 1.5 s", (), ("gemini-1.5-pro-002", "1.5 s")),
    Case(
        "keep",
        "llama-3.1-70b-instruct via ollama, mistral-large-2407 via API",
        (),
        ("llama-3.1-70b-instruct", "mistral-large-2407"),
    ),
    Case("keep", "rkd 1.0.0 (client 0.12.3-beta.1)", (), ("1.0.0", "0.12.3-beta.1")),
    Case("keep", "upgrade to v2.3.4+build.5 available", (), ("v2.3.4+build.5",)),
    Case(
        "keep", "macOS 10.15.7 is no longer supported", (), ("macOS 10.15.7", "no longer supported")
    ),
    Case(
        "keep",
        "error[E0425]: cannot find value `x` in this scope",
        (),
        ("E0425", "cannot find value `x` in this scope"),
    ),
    Case(
        "keep",
        "net::ERR_CONNECTION_REFUSED while fetching config",
        (),
        ("ERR_CONNECTION_REFUSED", "while fetching config"),
    ),
    Case("keep", "Error: read ECONNRESET", (), ("ECONNRESET",)),
    Case(
        "keep",
        '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
        (),
        ('"type": "overloaded_error"', '"message": "Overloaded"'),
    ),
    Case(
        "keep",
        "anthropic.RateLimitError: rate_limit_exceeded (HTTP 429)",
        (),
        ("anthropic.RateLimitError", "rate_limit_exceeded", "HTTP 429"),
    ),
    Case("keep", "HTTP/1.1 429 Too Many Requests", (), ("429 Too Many Requests",)),
    Case("keep", "HTTP/2 503 Service Unavailable", (), ("503 Service Unavailable",)),
    Case("keep", "platform=linux arch=x86_64", (), ("linux", "x86_64")),
    Case(
        "keep",
        "os=macos arch=aarch64 target=darwin-arm64",
        (),
        ("macos", "aarch64", "darwin-arm64"),
    ),
    Case("keep", "windows arm64 build finished", (), ("windows arm64 build finished",)),
    Case(
        "keep",
        "session 550e8400-e29b-41d4-a716-446655440000 started",
        (),
        ("550e8400-e29b-41d4-a716-446655440000",),
    ),
    Case(
        "keep",
        "event_id=6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
        (),
        ("6BA7B810-9DAD-11D1-80B4-00C04FD430C8",),
    ),
    Case(
        "keep",
        '{"event_id": "01943f3a-8c2e-7b4d-9f1a-2c3d4e5f6a7b", "schema_version": 1}',
        (),
        ("01943f3a-8c2e-7b4d-9f1a-2c3d4e5f6a7b", '"schema_version": 1'),
    ),
    Case(
        "keep",
        "name-based id 886313e1-3b8a-5372-9b90-0c9aee199e5d",
        (),
        ("886313e1-3b8a-5372-9b90-0c9aee199e5d",),
    ),
    Case(
        "keep",
        "nil uuid 00000000-0000-0000-0000-000000000000 rejected",
        (),
        ("00000000-0000-0000-0000-000000000000",),
    ),
    Case(
        "keep",
        "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
        (),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ),
    Case(
        "keep",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        (),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",),
    ),
    Case(
        "keep",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        (),
        ("9fceb02d0ae598e95dc970b74767f19372d61af8",),
    ),
    Case("keep", "HEAD is now at a1b2c3d Fix parser", (), ("a1b2c3d", "Fix parser")),
    Case("keep", "built from 7f3e9c1 (dirty)", (), ("7f3e9c1",)),
    Case(
        "keep",
        "2025-12-28T10:30:00.000Z INFO daemon ready",
        (),
        ("2025-12-28T10:30:00.000Z", "daemon ready"),
    ),
    Case("keep", "started at 2025-12-28 10:30:00+01:00", (), ("2025-12-28 10:30:00+01:00",)),
    Case(
        "keep",
        "retention: events older than 2024-01-15 were pruned",
        (),
        ("2024-01-15", "were pruned"),
    ),
    Case("keep", "p95 latency 312.5 ms, p99 812ms", (), ("312.5 ms", "812ms")),
    Case("keep", "disk usage 1.5 GB of 20 GB (7.5%)", (), ("1.5 GB", "20 GB", "7.5%")),
    Case("keep", "pi is roughly 3.14", (), ("3.14",)),
    Case("keep", "learning_rate=1e-5 epochs=3", (), ("learning_rate=1e-5", "epochs=3")),
    Case("keep", "listening on port 8080", (), ("8080",)),
    Case("keep", "success rate 99.9%", (), ("99.9%",)),
    Case("keep", "class RateLimitError(APIStatusError):", (), ("RateLimitError", "APIStatusError")),
    Case(
        "keep",
        "rkd.client.telemetry.emit() dropped 3 events",
        (),
        ("rkd.client.telemetry.emit()", "dropped 3 events"),
    ),
    Case("keep", "from rkd.daemon.store import EventStore", (), ("rkd.daemon.store", "EventStore")),
    Case(
        "keep",
        "snake_case_identifier used in TelemetryConfig",
        (),
        ("snake_case_identifier", "TelemetryConfig"),
    ),
    Case("keep", "opt-in required; re-run with --yes", (), ("opt-in required", "re-run", "--yes")),
    Case("keep", "user cancelled the request", (), ("user cancelled the request",)),
    Case(
        "keep",
        "the quick brown fox jumps over the lazy dog",
        (),
        ("the quick brown fox jumps over the lazy dog",),
    ),
    Case(
        "keep",
        "retry-after header missing, backing off 2.5 s",
        (),
        ("retry-after header missing", "2.5 s"),
    ),
    Case("keep", "Traceback (most recent call last):", (), ("Traceback (most recent call last):",)),
    Case(
        "keep",
        "ValueError: invalid literal for int() with base 10: 'abc'",
        (),
        ("ValueError", "invalid literal for int() with base 10"),
    ),
    Case("keep", "KeyError: 'profile'", (), ("KeyError", "'profile'")),
    Case("keep", "TimeoutError: timed out after 30s", (), ("TimeoutError", "timed out after 30s")),
    Case(
        "keep",
        "max_tokens=4096 temperature=0.7 top_p=0.95",
        (),
        ("max_tokens=4096", "temperature=0.7", "top_p=0.95"),
    ),
    Case(
        "keep",
        "prompt_tokens: 512, completion_tokens: 128, total_tokens: 640",
        (),
        ("prompt_tokens: 512", "completion_tokens: 128", "total_tokens: 640"),
    ),
    Case(
        "keep",
        '{"usage": {"input_tokens": 1532, "output_tokens": 418}}',
        (),
        ('"input_tokens": 1532', '"output_tokens": 418'),
    ),
    Case(
        "keep",
        "rkd think --max-tokens 1024 --profile quick",
        (),
        ("--max-tokens 1024", "--profile quick"),
    ),
    Case(
        "keep",
        "password reset is not supported by this CLI",
        (),
        ("password reset is not supported by this CLI",),
    ),
    Case(
        "keep",
        "token budget exhausted: 100000 of 100000 used",
        (),
        ("token budget exhausted", "100000 of 100000 used"),
    ),
    Case("keep", "Schritt 3 von 5 abgeschlossen ✅", (), ("Schritt 3 von 5 abgeschlossen ✅",)),
    Case(
        "keep",
        "Échec de la requête : délai dépassé (30 s)",
        (),
        ("Échec de la requête", "délai dépassé (30 s)"),
    ),
    Case(
        "keep",
        "リクエストがタイムアウトしました (2500ms)",
        (),
        ("リクエストがタイムアウトしました", "2500ms"),
    ),
    Case("keep", "请求失败：rate_limit_exceeded", (), ("请求失败", "rate_limit_exceeded")),
    Case("keep", "🚀 deploy finished in 42s", (), ("🚀", "deploy finished in 42s")),
    Case(
        "keep",
        "schema_version=3 event=command_invoked",
        (),
        ("schema_version=3", "event=command_invoked"),
    ),
    Case("keep", "event_name=think.completed status=ok", (), ("think.completed", "status=ok")),
    Case("keep", "module rkd.cli.main loaded", (), ("rkd.cli.main",)),
    Case("keep", "python 3.11.9 on linux", (), ("3.11.9", "linux")),
    Case("keep", "node v20.11.1, npm 10.2.4", (), ("v20.11.1", "10.2.4")),
    Case("keep", "pip install rkd==0.1.0", (), ("rkd==0.1.0",)),
    Case("keep", "process exited with exit code 1", (), ("exit code 1",)),
    Case("keep", "status 404 Not Found", (), ("404 Not Found",)),
    Case("keep", "HTTP 500 Internal Server Error", (), ("HTTP 500 Internal Server Error",)),
    Case("keep", "took 0.003s", (), ("0.003s",)),
    Case("keep", "batch of 250 events flushed", (), ("batch of 250 events flushed",)),
    Case("keep", "queue depth 17, dropped 0", (), ("queue depth 17", "dropped 0")),
    Case("keep", "gigathink produced 10 perspectives", (), ("gigathink", "10 perspectives")),
    Case("keep", "laserlogic found 2 fallacies", (), ("laserlogic", "2 fallacies")),
    Case(
        "keep",
        "bedrock: first principles decomposition complete",
        (),
        ("bedrock", "first principles decomposition complete"),
    ),
    Case("keep", "proofguard verified 3 of 4 claims", (), ("proofguard", "3 of 4 claims")),
    Case("keep", "brutalhonesty score 0.82", (), ("brutalhonesty", "0.82")),
    Case(
        "keep",
        "deep profile uses gigathink+laserlogic+bedrock+proofguard",
        (),
        ("gigathink+laserlogic+bedrock+proofguard",),
    ),
    Case("keep", "timestamp 2025-12-28T10:30:00+00:00", (), ("2025-12-28T10:30:00+00:00",)),
    Case("keep", "Date: Sun, 28 Dec 2025 10:30:00 GMT", (), ("Sun, 28 Dec 2025 10:30:00 GMT",)),
    Case("keep", "cache hit ratio 0.93", (), ("0.93",)),
    Case("keep", "semver 2.0.0-rc.1 is a pre-release", (), ("2.0.0-rc.1", "pre-release")),
    Case(
        "keep",
        "anthropic-ratelimit-requests-remaining: 0",
        (),
        ("anthropic-ratelimit-requests-remaining: 0",),
    ),
    Case(
        "keep",
        "request-id: 3f2b8c1e-9d4a-4e6b-8f7c-1a2b3c4d5e6f",
        (),
        ("3f2b8c1e-9d4a-4e6b-8f7c-1a2b3c4d5e6f",),
    ),
    Case("keep", "error[E0308]: mismatched types", (), ("E0308", "mismatched types")),
    Case("keep", "ENOENT: no such file or directory", (), ("ENOENT", "no such file or directory")),
    Case("keep", "write EPIPE: broken pipe", (), ("EPIPE", "broken pipe")),
    Case(
        "keep",
        "SIGTERM received, shutting down gracefully",
        (),
        ("SIGTERM", "shutting down gracefully"),
    ),
    Case(
        "keep",
        "HTTPServerError and XMLParser are CamelCase names",
        (),
        ("HTTPServerError", "XMLParser", "CamelCase"),
    ),
    Case("keep", "if __name__ == '__main__': main()", (), ("__name__", "'__main__'")),
    Case(
        "keep",
        "test_privacy_firewall_keeps_uuids PASSED",
        (),
        ("test_privacy_firewall_keeps_uuids", "PASSED"),
    ),
    Case("keep", "feature flag new_parser=true", (), ("new_parser=true",)),
    Case("keep", "rkd metrics --since 7d", (), ("metrics", "--since 7d")),
    Case("keep", "rkd compare --profiles quick,deep", (), ("compare", "quick,deep")),
    Case("keep", "rkd status -v --json", (), ("status", "-v", "--json")),
    Case("keep", "On branch main, nothing to commit", (), ("On branch main", "nothing to commit")),
    Case("keep", "cpu=8 mem=16GiB", (), ("cpu=8", "mem=16GiB")),
    Case("keep", "target x86_64-unknown-linux-gnu", (), ("x86_64-unknown-linux-gnu",)),
    Case("keep", "target aarch64-apple-darwin", (), ("aarch64-apple-darwin",)),
    Case("keep", "wheel rkd-0.1.0-py3-none-any.whl", (), ("rkd-0.1.0-py3-none-any.whl",)),
    Case("keep", "anthropic==0.40.0 openai==1.57.0", (), ("anthropic==0.40.0", "openai==1.57.0")),
    Case("keep", "elapsed 00:01:23", (), ("00:01:23",)),
    Case("keep", "Kernel 6.8.0-49-generic", (), ("6.8.0-49-generic",)),
    Case("keep", "glibc 2.35 detected", (), ("glibc 2.35",)),
    Case("keep", "404 page not found", (), ("404 page not found",)),
    Case(
        "keep",
        "deep mode: 4 tools, 12 steps, 3.2s",
        (),
        ("deep mode", "4 tools", "12 steps", "3.2s"),
    ),
    Case(
        "keep",
        "p99=812ms threshold=0.5 weight=0.25",
        (),
        ("p99=812ms", "threshold=0.5", "weight=0.25"),
    ),
    Case(
        "keep",
        "ThinkToolResult(confidence=0.87, tool='proofguard')",
        (),
        ("ThinkToolResult", "confidence=0.87", "tool='proofguard'"),
    ),
    Case(
        "keep",
        "rkd.daemon.ingest: accepted 42 events",
        (),
        ("rkd.daemon.ingest", "accepted 42 events"),
    ),
    Case(
        "keep",
        "UUID 123e4567-e89b-12d3-a456-426614174000",
        (),
        ("123e4567-e89b-12d3-a456-426614174000",),
    ),
    Case(
        "keep",
        "invalid_request_error: messages: at least one message is required",
        (),
        ("invalid_request_error", "at least one message is required"),
    ),
    Case(
        "keep",
        "authentication_error: check your configuration",
        (),
        ("authentication_error", "check your configuration"),
    ),
    Case("keep", "permission_error", (), ("permission_error",)),
    Case(
        "keep",
        "context_length_exceeded for gpt-4o-mini",
        (),
        ("context_length_exceeded", "gpt-4o-mini"),
    ),
    Case("keep", "insufficient_quota", (), ("insufficient_quota",)),
    Case(
        "keep",
        "openai.BadRequestError: Error code: 400",
        (),
        ("openai.BadRequestError", "Error code: 400"),
    ),
    Case(
        "keep",
        "no e-mail configured for notifications",
        (),
        ("no e-mail configured for notifications",),
    ),
    Case("keep", "@dataclass(frozen=True)", (), ("@dataclass(frozen=True)",)),
    Case("keep", "see pyproject.toml and README.md", (), ("pyproject.toml", "README.md")),
    Case("keep", "task-runner and risk-free mode", (), ("task-runner", "risk-free")),
    Case("keep", "Dauer: 2,5 s, 1.234 Ereignisse", (), ("Dauer", "2,5 s", "1.234 Ereignisse")),
    Case(
        "keep", "処理時間 812ms、トークン数 1,234", (), ("処理時間", "812ms", "トークン数", "1,234")
    ),
    Case(
        "keep",
        "模型 claude-3-5-sonnet-20241022 返回 overloaded_error",
        (),
        ("claude-3-5-sonnet-20241022", "overloaded_error"),
    ),
    Case("keep", "⚠️ rate limited (HTTP 429), retrying in 2500ms", (), ("⚠️", "HTTP 429", "2500ms")),
    Case("keep", "E0425 E0308 E0599", (), ("E0425", "E0308", "E0599")),
    Case(
        "keep",
        "version 0.1.0 on darwin-arm64 (macos 14.5)",
        (),
        ("0.1.0", "darwin-arm64", "macos 14.5"),
    ),
    Case(
        "keep",
        "2025-12-28T10:30:00Z WARN think slow: 12.5s > 10s budget",
        (),
        ("2025-12-28T10:30:00Z", "think slow", "12.5s > 10s budget"),
    ),
    Case(
        "keep",
        '{"command": "think", "profile": "quick", "tools": ["gigathink", "laserlogic"], "ok": true}',
        (),
        ('"command": "think"', '"profile": "quick"', '["gigathink", "laserlogic"]', '"ok": true'),
    ),
    Case(
        "keep",
        "events: 0 sent, 3 queued, 1 dropped (queue_full)",
        (),
        ("0 sent", "3 queued", "1 dropped", "queue_full"),
    ),
    Case("keep", "consent=granted telemetry=on", (), ("consent=granted", "telemetry=on")),
    Case("keep", "-1 is not a valid limit", (), ("-1 is not a valid limit",)),
    Case("keep", "ratio 0.5, delta -0.25, scale 2e10", (), ("0.5", "-0.25", "2e10")),
    Case("keep", "Monday, 2024-01-15 at 09:00", (), ("2024-01-15", "09:00")),
    Case(
        "keep",
        "isinstance(exc, anthropic.APIConnectionError)",
        (),
        ("anthropic.APIConnectionError",),
    ),
]


# ---------------------------------------------------------------------------------------------
# Self-check: python tests/privacy_corpus.py
# ---------------------------------------------------------------------------------------------

# IBAN length per country, for the countries used above.
_IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "DE": 22, "ES": 24, "FR": 27, "GB": 22, "IT": 27, "NL": 18,
}  # fmt: skip


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(card: str) -> bool:
    digits = "".join(c for c in card if c.isdigit())
    if not _luhn_ok(digits) or set(card) - set("0123456789 -"):
        return False
    if len(digits) == 15:
        return digits[:2] in ("34", "37")
    if len(digits) == 16:
        return digits[0] == "4" or 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720
    return False


def _iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ssn_ok(ssn: str) -> bool:
    digits = "".join(c for c in ssn if c.isdigit())
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _problems() -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, case in enumerate(CASES):
        where = f"case {i} ({case.category}) {case.text[:60]!r}"

        def bad(msg: str, where: str = where) -> None:
            problems.append(f"{where}: {msg}")

        if case.category not in CATEGORIES:
            bad("unknown category")
        if case.text in seen:
            bad("duplicate text")
        seen.add(case.text)
        if case.category == "keep":
            if case.secrets or not case.keep:
                bad("keep cases have no secrets and at least one keep string")
        elif not case.secrets:
            bad("no secrets")
        for s in (*case.secrets, *case.keep):
            if not s or s not in case.text:
                bad(f"{s!r} does not occur in the text")
        for k in case.keep:
            if k in case.secrets:
                bad(f"{k!r} is both a secret and a keep string")
            if any(k in s for s in case.secrets):
                bad(f"keep string {k!r} lies inside a secret")
        # A perfect filter: every secret replaced, nothing else touched.
        redacted = case.text
        for s in sorted(case.secrets, key=len, reverse=True):
            redacted = redacted.replace(s, "\0")
        for k in case.keep:
            if k not in redacted:
                bad(f"keep string {k!r} does not survive removing the secrets")
        if case.category == "credit_card" and not _card_ok(case.secrets[0]):
            bad(f"{case.secrets[0]!r} is not a Luhn-valid Visa/Mastercard/Amex number")
        if case.category == "iban" and not _iban_ok(case.secrets[0]):
            bad(f"{case.secrets[0]!r} is not a valid IBAN")
        if case.category == "ssn" and not _ssn_ok(case.secrets[0]):
            bad(f"{case.secrets[0]!r} is not a valid-looking SSN")
    return problems


def _counts() -> dict[str, int]:
    counts = dict.fromkeys(CATEGORIES, 0)
    for case in CASES:
        counts[case.category] = counts.get(case.category, 0) + 1
    return counts


if __name__ == "__main__":
    import sys

    counts = _counts()
    problems = _problems()
    if len(CASES) < 320:
        problems.append(f"only {len(CASES)} cases, want at least 320")
    if counts["keep"] < 100:
        problems.append(f"only {counts['keep']} keep cases, want at least 100")
    problems += [f"only {n} {cat} cases, want at least 6" for cat, n in counts.items() if n < 6]
    for cat in CATEGORIES:
        print(f"{cat:20} {counts[cat]:4}")
    print(f"{'total':20} {len(CASES):4}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print("ok: every secret and keep string occurs in its text, cards pass Luhn, IBANs mod-97")
