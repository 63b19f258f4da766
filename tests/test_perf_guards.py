"""Behaviour the daemon's speed-ups must keep: same results as the plain way, same rejections."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rkd.client.schema import Source
from rkd.daemon.pipeline import Rejected, SplitDecoder, _decoder, decode

from tests.samples import ALL_TYPES, SOURCE, envelope, frame, sample_payload


def full(data: bytes) -> Any:
    """What the plain ``Decoder(Event)`` makes of ``data``: the envelope or the error text."""
    try:
        return _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        return f"{type(e).__name__}: {e}"


def split(data: bytes) -> Any:
    """What ``decode`` makes of it: the envelope or the rejection reason."""
    try:
        return decode(data)
    except Rejected as r:
        return r.reason


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.event_type)
def test_split_decoder_gives_the_full_decoders_envelope(cls: Any) -> None:
    """Every event type decodes to the identical envelope, first time and from the cache."""
    data = frame(sample_payload(cls))
    assert [full(data)] * 2 == [decode(data), decode(data)]
    if b"discovery_source" not in data:  # "source" twice: the full decoder's job
        assert full(data) == SplitDecoder().decode(data)


def test_a_key_given_twice_is_judged_by_the_full_decoder() -> None:
    """A map with ``source`` twice (a bad one first) is rejected as before, not taken."""
    good = msgspec.msgpack.encode(msgspec.to_builtins(envelope(sample_payload(ALL_TYPES[0]))))
    bad_source = msgspec.msgpack.encode({"source": {"product": "a b"}})[1:]  # key + value
    doubled = bytes([good[0] + 1]) + bad_source + good[1:]  # fixmap with one more entry
    assert "invalid_field" == split(doubled)
    assert full(doubled).startswith("ValidationError")


def test_a_bad_source_is_rejected_with_the_same_reason_after_a_good_one() -> None:
    """The cache of validated values never lets an invalid value through."""
    decode(frame(sample_payload(ALL_TYPES[0])))
    bad = Source(product="a/b", version="1.0.0", os="linux", arch="x", python_version="3")
    assert "invalid_field" == split(frame(sample_payload(ALL_TYPES[0]), source=bad))


@settings(max_examples=200, deadline=None)
@given(
    product=st.text(min_size=0, max_size=12),
    version=st.text(min_size=0, max_size=8),
    schema_version=st.sampled_from(["1.0.0", "1.2.3", "2.0.0", "", "1.0"]),
)
def test_split_and_full_decoders_agree_on_any_source(
    product: str, version: str, schema_version: str
) -> None:
    """Valid or not, a frame is accepted with the same envelope or rejected as before."""
    src = Source(product=product, version=version, os="linux", arch="x", python_version="3.11")
    data = frame(sample_payload(ALL_TYPES[0]), source=src, schema_version=schema_version)
    expected = full(data)
    actual = split(data)
    if isinstance(expected, str):
        assert isinstance(actual, str)
    else:
        assert expected == actual


def test_source_cache_is_bounded() -> None:
    """Many distinct sources never grow the cache past its limit."""
    d = SplitDecoder()
    for i in range(SplitDecoder.CACHE_MAX + 10):
        src = msgspec.structs.replace(SOURCE, version=f"1.0.{i}")
        d.decode(frame(sample_payload(ALL_TYPES[0]), source=src))
    assert len(d._cache["source"]) <= SplitDecoder.CACHE_MAX
