"""Messages: validation, the binary wire format, the JSON view, and decoding of bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from online_distill.messages import (
    DECODE_REASONS,
    FORMAT_VERSION,
    MAGIC,
    MAX_TOKEN_ID,
    DeadLetter,
    LabeledExample,
    Message,
    MessageDecodeError,
    Origin,
    PromptMessage,
    PseudoTarget,
    Timings,
    decode,
    encode,
    from_json_dict,
    new_id,
    to_json_dict,
)
from online_distill.messages.schema import FrozenArray
from tests.unit.rebuild import rebuilt

NEG_INF = -math.inf
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- builders and strategies ----------------------------------------------------------------


def make_pt(t: int = 3, k: int = 2, first_id: int = 1, **overrides: object) -> PseudoTarget:
    fields: dict[str, object] = dict(
        token_ids=[first_id + i for i in range(t)],
        text="x" * t,
        source="teacher",
        decoding="sample",
        topk_ids=[[first_id + i + j for j in range(k)] for i in range(t)],
        topk_logprobs=[[-0.25 * (j + 1) for j in range(k)] for _ in range(t)],
        tail_logmass=[-3.0] * t,
        sampled_logprobs=[-0.25] * t,
    )
    fields.update(overrides)
    return PseudoTarget(**fields)  # type: ignore[arg-type]


def make_example(**overrides: object) -> LabeledExample:
    fields: dict[str, object] = dict(
        prompt_id="p1",
        prompt_text="12+34=",
        prompt_token_ids=[4, 5, 6],
        pseudo_targets=[make_pt(), make_pt(t=2, decoding="greedy")],
        teacher_id="demo-teacher@1",
        kind="add2",
        timings=Timings(label_seconds=0.5, queue_seconds=0.25),
        created_at=1000.0,
        prompt_created_at=999.0,
    )
    fields.update(overrides)
    return LabeledExample(**fields)  # type: ignore[arg-type]


def make_dead_letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = dict(
        payload=b"\x00junk\xff",
        topic="prompts",
        partition=2,
        offset=41,
        reason="bad_magic: ...",
        stage="teacher",
        error_type="bad_magic",
        created_at=5.0,
    )
    fields.update(overrides)
    return DeadLetter(**fields)  # type: ignore[arg-type]


texts = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)
times = st.floats(0.0, 4e9)
energies = st.floats(-1e6, 1e6)
logprob = st.floats(max_value=0.0, allow_nan=False, width=32)  # includes -inf and -0.0
id_ranges = st.sampled_from([255, 65535, MAX_TOKEN_ID])  # exercises u1, u2 and u4 ids


@st.composite
def pseudo_targets(draw: st.DrawFn) -> PseudoTarget:
    t = draw(st.integers(0, 5))
    k = draw(st.integers(0, 4)) if t else 0
    ids = st.integers(0, draw(id_ranges))
    return PseudoTarget.from_arrays(
        token_ids=draw(st.lists(ids, min_size=t, max_size=t)),
        text=draw(texts),
        source=draw(st.sampled_from(["teacher", "student"])),
        decoding=draw(st.sampled_from(["greedy", "sample", "beam"])),
        topk_ids=[draw(st.lists(ids, min_size=k, max_size=k)) for _ in range(t)],
        topk_logprobs=[draw(st.lists(logprob, min_size=k, max_size=k)) for _ in range(t)],
        tail_logmass=draw(st.lists(logprob, min_size=t, max_size=t)),
        sampled_logprobs=draw(st.lists(logprob, min_size=t, max_size=t)),
    )


@st.composite
def prompts(draw: st.DrawFn) -> PromptMessage:
    origin: Origin = draw(st.sampled_from(["traffic", "feedback"]))
    parents = draw(st.lists(names, max_size=3)) if origin == "feedback" else []
    parent_energies = draw(st.sampled_from([[], [draw(energies) for _ in parents]]))
    return PromptMessage(
        id=draw(names),
        text=draw(texts),
        origin=origin,
        created_at=draw(times),
        kind=draw(texts),
        parent_ids=tuple(parents),
        parent_energies=tuple(parent_energies),
        energy=draw(st.none() | energies),
    )


@st.composite
def labeled_examples(draw: st.DrawFn) -> LabeledExample:
    return LabeledExample(
        prompt_id=draw(names),
        prompt_text=draw(texts),
        prompt_token_ids=tuple(draw(st.lists(st.integers(0, MAX_TOKEN_ID), max_size=5))),
        pseudo_targets=tuple(draw(st.lists(pseudo_targets(), min_size=1, max_size=3))),
        teacher_id=draw(names),
        origin=draw(st.sampled_from(["traffic", "feedback"])),
        kind=draw(texts),
        timings=Timings(label_seconds=draw(times), queue_seconds=draw(times)),
        created_at=draw(times),
        prompt_created_at=draw(st.none() | times),
    )


@st.composite
def dead_letters(draw: st.DrawFn) -> DeadLetter:
    return DeadLetter(
        payload=draw(st.binary(max_size=40)),
        topic=draw(texts),
        partition=draw(st.integers(-1, 2**31 - 1)),
        offset=draw(st.integers(-1, 2**63 - 1)),
        reason=draw(texts),
        stage=draw(texts),
        error_type=draw(texts),
        created_at=draw(times),
    )


messages = st.one_of(prompts(), labeled_examples(), dead_letters())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


def restamp(data: bytes) -> bytes:
    """`data` with its CRC recomputed, so corruption reaches the parser behind the check."""
    if len(data) < 17:
        return data
    crc = zlib.crc32(data[17:], zlib.crc32(data[:13]))
    return data[:13] + struct.pack("<I", crc) + data[17:]


def split(data: bytes) -> tuple[bytes, dict, bytes]:
    """(prefix, header object, arrays) of an encoded message."""
    h_len, _ = struct.unpack_from("<II", data, 5)
    return data[:17], json.loads(data[17 : 17 + h_len]), data[17 + h_len :]


def join(prefix: bytes, header: object, arrays: bytes) -> bytes:
    head = json.dumps(header).encode()
    return restamp(
        prefix[:5] + struct.pack("<II", len(head), len(arrays)) + b"\0" * 4 + head + arrays
    )


def decode_error(data: object, **kwargs: object) -> MessageDecodeError:
    with pytest.raises(MessageDecodeError) as info:
        decode(data, **kwargs)  # type: ignore[arg-type, call-overload]
    assert info.value.reason in DECODE_REASONS
    assert str(info.value).startswith(f"{info.value.reason}: ")
    return info.value


def decodes_or_refuses(data: object) -> None:
    """The decode contract: a valid message, or MessageDecodeError; nothing else escapes."""
    try:
        msg = decode(data)  # type: ignore[call-overload]
    except MessageDecodeError as e:
        assert e.reason in DECODE_REASONS
    else:
        assert decode(encode(msg, logprob_dtype="float32")) == msg


def float16_view(msg: Message) -> Message:
    """`msg` with every log-probability rounded to float16, as the float16 wire keeps it."""
    if not isinstance(msg, LabeledExample):
        return msg

    def f16(a: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return a.astype(np.float16)

    pts = tuple(
        dataclasses.replace(
            pt,
            topk_logprobs=f16(pt.topk_logprobs_array()),  # type: ignore[arg-type]
            tail_logmass=f16(pt.tail_logmass_array()),  # type: ignore[arg-type]
            sampled_logprobs=f16(pt.sampled_logprobs_array()),  # type: ignore[arg-type]
        )
        for pt in msg.pseudo_targets
    )
    return dataclasses.replace(msg, pseudo_targets=pts)


# --- construction and validation ---------------------------------------------------------


def test_new_id_is_32_hex_digits_and_unique() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_prompt_defaults_fill_id_and_time() -> None:
    before = time.time()
    p = PromptMessage(text="1+1=")
    assert re.fullmatch(r"[0-9a-f]{32}", p.id) and before <= p.created_at <= time.time()
    assert (p.origin, p.kind, p.parent_ids, p.energy) == ("traffic", "", (), None)
    assert PromptMessage(text="1+1=").id != p.id


def test_feedback_prompt_carries_parents_and_energies() -> None:
    p = PromptMessage(
        text="Q: 912*7=", origin="feedback", parent_ids=("a", "b"), parent_energies=(-1.5, -2)
    )
    assert p.parent_ids == ("a", "b") and p.parent_energies == (-1.5, -2.0)
    with pytest.raises(ValueError, match="origin='feedback'"):
        PromptMessage(text="x", parent_ids=("a",))
    with pytest.raises(ValueError, match="one energy per parent"):
        PromptMessage(text="x", origin="feedback", parent_ids=("a",), parent_energies=(1.0, 2.0))


def test_messages_are_frozen_hashable_and_normalised() -> None:
    ex = make_example()
    assert isinstance(ex.pseudo_targets, tuple) and isinstance(ex.prompt_token_ids, FrozenArray)
    assert not ex.prompt_token_ids.array.flags.writeable and ex.prompt_token_ids == (4, 5, 6)
    assert hash(ex) == hash(make_example()) and ex == make_example()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.kind = "other"  # type: ignore[misc]


def test_pseudo_target_accessors_shapes_and_dtypes() -> None:
    pt = make_pt(t=3, k=2)
    assert (pt.num_tokens, pt.k) == (3, 2)
    assert pt.token_ids_array().shape == (3,) and pt.token_ids_array().dtype == np.int32
    assert pt.topk_ids_array().shape == (3, 2) and pt.topk_ids_array(np.int64).dtype == np.int64
    assert pt.topk_logprobs_array().shape == (3, 2)
    assert pt.topk_logprobs_array().dtype == np.float32
    assert pt.tail_logmass_array().shape == pt.sampled_logprobs_array().shape == (3,)
    empty = make_pt(t=0, k=0)
    assert (empty.num_tokens, empty.k) == (0, 0)
    assert empty.topk_ids_array().shape == empty.topk_logprobs_array().shape == (0, 0)


def test_from_arrays_takes_numpy_and_keeps_float32_values() -> None:
    lp = np.log(np.array([[0.5, 0.25], [0.9, 0.05]]))  # float64
    pt = PseudoTarget.from_arrays(
        token_ids=np.array([3, 7], dtype=np.uint16),
        text="ab",
        source="student",
        decoding="beam",
        topk_ids=np.array([[3, 4], [7, 1]]),
        topk_logprobs=lp,
        tail_logmass=np.array([np.log(0.25), -np.inf]),
        sampled_logprobs=lp[:, 0],
    )
    assert pt.token_ids == (3, 7) and pt.tail_logmass[1] == NEG_INF
    np.testing.assert_array_equal(pt.topk_logprobs_array(), lp.astype(np.float32))


def test_logprob_noise_above_zero_is_clamped_larger_is_refused() -> None:
    pt = make_pt(t=1, k=1, topk_logprobs=[[5e-4]], sampled_logprobs=[1e-6])
    assert pt.topk_logprobs == ((0.0,),) and pt.sampled_logprobs == (0.0,)
    with pytest.raises(ValueError, match=r"topk_logprobs\[0\]\[1\] = 0.5"):
        make_pt(t=1, k=2, topk_logprobs=[[-1.0, 0.5]])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"topk_ids": [[1, 2], [1, 2]]}, "topk_ids has 2 rows for 3 token_ids"),
        ({"topk_logprobs": [[-1.0]] * 3}, r"topk_logprobs has shape \(3, 1\)"),
        ({"tail_logmass": [-1.0]}, "tail_logmass has 1 values for 3"),
        ({"sampled_logprobs": [-1.0] * 4}, "sampled_logprobs has 4 values for 3"),
        ({"topk_ids": [[1, 2], [1], [1, 2]]}, "rectangular"),
        ({"token_ids": [1, -2, 3]}, r"token_ids\[1\] = -2"),
        ({"token_ids": [1.0, 2.0, 3.0]}, "must hold ints"),
        ({"token_ids": [1, 2, 2**31]}, r"\[0, 2\*\*31\)"),
        ({"tail_logmass": [-1.0, float("nan"), -1.0]}, r"tail_logmass\[1\] = nan"),
        ({"sampled_logprobs": [-1.0, math.inf, -1.0]}, r"sampled_logprobs\[1\] = inf"),
        ({"tail_logmass": "abc"}, "tail_logmass must be floats"),
        ({"source": "oracle"}, "source must be one of"),
        ({"decoding": "nucleus"}, "decoding must be one of"),
        ({"text": 5}, "text must be str"),
        ({"text": "\ud800"}, "not encodable as UTF-8"),
    ],
)
def test_pseudo_target_rules(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_pt(t=3, k=2, **overrides)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"pseudo_targets": []}, "at least one"),
        ({"pseudo_targets": ["not a pt"]}, "must be a PseudoTarget"),
        ({"prompt_id": ""}, "prompt_id must not be empty"),
        ({"teacher_id": ""}, "teacher_id must not be empty"),
        ({"origin": "web"}, "origin must be one of"),
        ({"created_at": math.nan}, "created_at must be finite"),
        ({"prompt_created_at": -1.0}, "prompt_created_at must be >= 0"),
        ({"timings": (0.1, 0.2)}, "timings must be Timings"),
    ],
)
def test_labeled_example_rules(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_example(**overrides)


def test_other_rules() -> None:
    with pytest.raises(ValueError, match="queue_seconds must be >= 0"):
        Timings(queue_seconds=-1.0)
    with pytest.raises(ValueError, match="partition must be >= 0, or -1"):
        make_dead_letter(partition=-2)
    with pytest.raises(ValueError, match="payload must be bytes"):
        make_dead_letter(payload="text")
    with pytest.raises(ValueError, match="energy must be finite"):
        PromptMessage(text="x", energy=math.inf)
    assert make_dead_letter(payload=bytearray(b"ab"), offset=-1).payload == b"ab"


# --- wire format ---------------------------------------------------------------------------


def test_prefix_is_as_documented() -> None:
    data = encode(make_example())
    magic, version, tag, h_len, a_len, crc = struct.unpack_from("<3sBBIII", data)
    assert (magic, version, tag) == (MAGIC, FORMAT_VERSION, 2)
    assert len(data) == 17 + h_len + a_len
    assert crc == zlib.crc32(data[17:], zlib.crc32(data[:13]))
    _, header, arrays = split(data)
    assert (header["ids"], header["logprobs"], header["prompt_len"]) == ("u1", "f2", 3)
    assert [(p["T"], p["k"]) for p in header["pseudo_targets"]] == [(3, 2), (2, 2)]
    # prompt 3 ids; PT 1: 3 + 6 ids, 6 + 3 + 3 logprobs; PT 2: 2 + 4 ids, 4 + 2 + 2 logprobs
    assert len(arrays) == (3 + 9 + 6) * 1 + (12 + 8) * 2
    assert struct.unpack_from("<3sBB", encode(PromptMessage(text="x")))[2] == 1
    assert encode(make_dead_letter()).endswith(b"\x00junk\xff")


@pytest.mark.parametrize(("max_id", "code"), [(255, "u1"), (256, "u2"), (65536, "u4")])
def test_smallest_id_type_is_chosen(max_id: int, code: str) -> None:
    ex = make_example(prompt_token_ids=[0, max_id])
    assert split(encode(ex))[1]["ids"] == code
    assert decode(encode(ex), LabeledExample) == float16_view(ex)


def test_float16_error_bound_and_float32_exact() -> None:
    lp = -np.geomspace(1e-6, 60000, 200).astype(np.float32)
    pt = make_pt(t=1, k=200, topk_ids=[list(range(200))], topk_logprobs=[lp])
    ex = make_example(pseudo_targets=[pt])
    got = decode(encode(ex), LabeledExample).pseudo_targets[0].topk_logprobs_array()[0]
    # relative 2**-11 (<= 3.9e-3 absolute in [-8, 0]); subnormals below 6e-5: absolute 2**-25
    assert np.all(np.abs(got - lp) <= np.maximum(np.abs(lp) * 2**-11, 2**-25))
    assert decode(encode(ex, logprob_dtype="float32")) == ex


@given(messages)
@PROPERTY
def test_round_trip_float32_is_exact(msg: Message) -> None:
    assert decode(encode(msg, logprob_dtype="float32"), type(msg)) == msg
    assert decode(bytearray(encode(msg))) == decode(memoryview(encode(msg)))


@given(messages)
@PROPERTY
def test_round_trip_float16_rounds_logprobs_only(msg: Message) -> None:
    data = encode(msg)
    back = decode(data)
    assert back == float16_view(msg)
    assert decode(encode(back)) == back  # a second round trip loses nothing more


@given(messages, st.data())
@PROPERTY
def test_truncation_is_always_reported(msg: Message, data: st.DataObject) -> None:
    encoded = encode(msg)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert decode_error(encoded[:cut]).reason == "truncated"


@given(messages, st.data())
@PROPERTY
def test_any_single_bit_flip_is_refused(msg: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode(msg))
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
    encoded[bit // 8] ^= 1 << (bit % 8)
    decode_error(bytes(encoded))


@given(messages, st.data())
@PROPERTY
def test_corruption_behind_the_checksum_never_leaks_other_errors(
    msg: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    decodes_or_refuses(restamp(bytes(encoded)))


@given(messages, st.data())
@PROPERTY
def test_arbitrary_header_never_leaks_other_errors(msg: Message, data: st.DataObject) -> None:
    prefix, header, arrays = split(encode(msg))
    key = data.draw(st.sampled_from(sorted(header)))
    header[key] = data.draw(json_values)
    decodes_or_refuses(join(prefix, header, arrays))
    decodes_or_refuses(join(prefix, data.draw(json_values), arrays))


@given(st.binary(max_size=64))
@settings(max_examples=150, deadline=None)
def test_arbitrary_bytes_never_leak_other_errors(junk: bytes) -> None:
    decodes_or_refuses(junk)
    for tag in (1, 2, 3):  # also behind a valid magic, version and tag
        decodes_or_refuses(restamp(MAGIC + bytes([FORMAT_VERSION, tag]) + junk))


@pytest.mark.parametrize("value", ["text", None, 42, [1, 2], {"a": 1}])
def test_non_bytes_input(value: object) -> None:
    assert decode_error(value).reason == "not_bytes"


def test_each_failure_has_its_reason() -> None:
    good = encode(make_example())
    prefix, header, arrays = split(good)
    assert decode_error(good, max_bytes=len(good) - 1).reason == "oversize"
    assert decode_error(b"PK\x03\x04" + good[4:]).reason == "bad_magic"
    assert decode_error(b"").reason == "truncated"
    assert decode_error(good[:10]).reason == "truncated"
    newer = decode_error(good[:3] + b"\x02" + good[4:])
    assert newer.reason == "bad_version" and "upgrade" in str(newer)
    assert decode_error(good[:4] + b"\x09" + good[5:]).reason == "bad_type"
    assert decode_error(good, expected=PromptMessage).reason == "wrong_type"
    assert decode_error(good + b"\0").reason == "trailing_bytes"
    assert decode_error(good[:-1] + bytes([good[-1] ^ 1])).reason == "bad_checksum"
    assert decode_error(restamp(good[:17] + b"\xff" + good[18:])).reason == "bad_header"
    del header["teacher_id"]
    missing = decode_error(join(prefix, header, arrays))
    assert (missing.reason, missing.detail) == ("bad_field", "header: missing field 'teacher_id'")


def test_inconsistent_array_lengths_say_how_many_bytes() -> None:
    prefix, header, arrays = split(encode(make_example()))
    header["pseudo_targets"][0]["T"] = 4  # one more token: 1 + k ids (u1), k + 2 logprobs (f2)
    err = decode_error(join(prefix, header, arrays))
    assert (
        str(err)
        == f"truncated: header says {len(arrays) + 11} bytes of arrays, {len(arrays)} present"
    )
    header["pseudo_targets"][0]["T"] = 2
    assert decode_error(join(prefix, header, arrays)).reason == "trailing_bytes"


def test_invalid_values_in_arrays_are_refused() -> None:
    ex = make_example(pseudo_targets=[make_pt(t=1, k=1)])
    prefix, header, arrays = split(encode(ex))
    nan = np.array([np.nan], dtype="<f2").tobytes()
    err = decode_error(join(prefix, header, arrays[:-2] + nan))
    assert err.reason == "invalid" and "sampled_logprobs[0] = nan" in str(err)


def test_decode_error_is_a_value_error_and_crosses_ray() -> None:
    err = MessageDecodeError("truncated", "header says 812 bytes of arrays, 40 present")
    assert isinstance(err, ValueError)
    back = rebuilt(err)
    assert (back.reason, str(back)) == (err.reason, str(err))


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(TypeError, match="not a message"):
        encode(make_pt())  # type: ignore[arg-type]


# --- JSON view -----------------------------------------------------------------------------


@given(messages)
@PROPERTY
def test_json_round_trip_is_exact_and_strict(msg: Message) -> None:
    text = json.dumps(to_json_dict(msg), allow_nan=False)  # strict JSON: no Infinity/NaN
    assert from_json_dict(json.loads(text), type(msg)) == msg


def test_json_layout() -> None:
    pt = make_pt(t=1, k=2, topk_logprobs=[[-0.1, NEG_INF]])
    d = to_json_dict(make_example(pseudo_targets=[pt]))
    assert (d["type"], d["format_version"]) == ("labeled_example", FORMAT_VERSION)
    assert d["timings"] == {"label_seconds": 0.5, "queue_seconds": 0.25}
    assert d["pseudo_targets"][0]["topk_logprobs"] == [[-0.1, None]]  # float32 shortest, -inf
    assert to_json_dict(make_dead_letter())["payload_b64"] == "AGp1bmv/"
    assert to_json_dict(PromptMessage(text="x"))["type"] == "prompt"


def test_json_ignores_unknown_keys_and_refuses_bad_input() -> None:
    d = to_json_dict(make_example())
    assert from_json_dict({**d, "annotator": "me"}) == make_example()
    no_version = {k: v for k, v in d.items() if k != "format_version"}
    assert from_json_dict(no_version) == make_example()
    cases = [
        ([d], "bad_field"),
        ({**d, "type": "label"}, "bad_type"),
        ({**d, "format_version": 2}, "bad_version"),
        ({**d, "prompt_token_ids": [1, None]}, "invalid"),
        ({**d, "timings": [1, 2]}, "bad_field"),
        ({**to_json_dict(make_dead_letter()), "payload_b64": "%%"}, "bad_field"),
    ]
    for bad, reason in cases:
        with pytest.raises(MessageDecodeError) as info:
            from_json_dict(bad)
        assert info.value.reason == reason
    with pytest.raises(MessageDecodeError, match="wrong_type"):
        from_json_dict(d, PromptMessage)


@given(messages, st.data())
@PROPERTY
def test_json_with_any_field_replaced_never_leaks_other_errors(
    msg: Message, data: st.DataObject
) -> None:
    d = to_json_dict(msg)
    target = d
    if isinstance(msg, LabeledExample) and data.draw(st.booleans()):
        target = d["pseudo_targets"][0]  # reach inside a pseudo-target too
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(json_values)
    try:
        back = from_json_dict(d)
    except MessageDecodeError as e:
        assert e.reason in DECODE_REASONS
    else:
        assert from_json_dict(to_json_dict(back)) == back


@given(json_values)
@settings(max_examples=100, deadline=None)
def test_json_arbitrary_values_never_leak_other_errors(value: object) -> None:
    with pytest.raises(MessageDecodeError):
        from_json_dict(value)
