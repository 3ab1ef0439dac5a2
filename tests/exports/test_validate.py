"""Export rows are checked column-wise; every bad row gets a reason naming the column."""

import threading

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import ExportError
from klaviyo_bridge.exports import validate as v


@pytest.mark.parametrize(
    "email, reason",
    [
        ("a@example.com", None),
        ("  Mixed.Case@Example.COM ", None),
        ("用户@例子.广告", None),
        ("josé@bücher.de", None),
        ("first.last+tag@sub.example.co.uk", None),
        ("", "email is empty"),
        (None, "email is empty"),
        ("   ", "email is empty"),
        ("John Doe <john@example.com>", "email has a display name; give the address only"),
        ("no-at-sign.example.com", "email is not a valid email address"),
        ("two@@example.com", "email is not a valid email address"),
        ("spaces in@example.com", "email is not a valid email address"),
        ("a@localhost", "email is not a valid email address"),
        ("a@example.c", "email is not a valid email address"),
        ("a@" + "x" * 260 + ".com", "email is longer than 254 characters"),
    ],
)
def test_email_checks(email, reason):
    checked = v.check_emails(pa.array([email], pa.string()))
    assert checked.reasons.to_pylist() == [reason]
    if reason is None:
        assert checked.values[0].as_py() == email.strip().lower()


@pytest.mark.parametrize(
    "phone, region, expected, reason",
    [
        ("+1 123 456 7890", None, None, "phone_number is not a valid number"),
        ("+1 (212) 555-0123", None, "+12125550123", None),
        ("+81 90-1234-5678", None, "+819012345678", None),
        ("(212) 555-0123", "US", "+12125550123", None),
        ("(212) 555-0123", None, None, "phone_number is not in E.164 (+countrycode...) and no default region is set"),
        ("+1 212 CALL NOW", None, None, "phone_number contains letters"),
        ("+1234567890123456", None, None, "phone_number has more than 15 digits"),
        ("", None, None, "phone_number is empty"),
    ],
)
def test_phone_checks(phone, region, expected, reason):
    checked = v.check_phones(pa.array([phone]), default_region=region)
    assert checked.reasons.to_pylist() == [reason]
    assert checked.values.to_pylist() == [expected]


def test_phones_are_parsed_once_per_distinct_value():
    many = pa.array(["+12125550123"] * 50_000 + ["bad"] * 50_000)
    checked = v.check_phones(many)
    assert checked.values.null_count == 50_000
    assert checked.reasons.to_pylist()[-1] == "phone_number contains letters"


def test_duplicates_keep_the_first_row():
    values = pa.array(["a", "b", "a", None, "a", "c", "b"])
    reasons = v.duplicate_reasons(values, "email", pa.nulls(7, pa.string()))
    assert [r is not None for r in reasons.to_pylist()] == [False, False, True, False, True, False, True]


def test_duplicates_across_chunks_and_inside_them():
    seen = v.SeenValues()
    first = seen.check(pa.array(["a", "b", None, "b"]), "email", pa.nulls(4, pa.string()))
    second = seen.check(pa.array(["c", "a", "c", None, "d"]), "email", pa.nulls(5, pa.string()))
    third = seen.check(pa.array(["d", "e"]), "email", pa.array(["bad", None]))
    assert [r is not None for r in first.to_pylist()] == [False, False, False, True]
    assert [r is not None for r in second.to_pylist()] == [False, True, True, False, False]
    assert third.to_pylist() == ["bad", None]  # an earlier reason stays; "d" was seen but already has one


def test_chunks_checked_on_threads_keep_the_first_row_in_input_order():
    seen = v.SeenValues()
    later: dict[str, pa.Array] = {}
    # chunk 1's thread starts first: its lookup must wait for chunk 0's, or its "a" would be kept
    # and chunk 0's "a" flagged; chunk 0 never checks phone_number, and its finish lets chunk 1's go
    thread = threading.Thread(
        target=lambda: later.update(
            email=seen.in_order(1).check(pa.array(["b", "a"]), "email", pa.nulls(2, pa.string())),
            phone=seen.in_order(1).check(pa.array(["+1", "+1"]), "phone_number", pa.nulls(2, pa.string())),
        )
    )
    thread.start()
    first = seen.in_order(0).check(pa.array(["a", "c"]), "email", pa.nulls(2, pa.string()))
    seen.finish(0)
    thread.join()
    third = seen.in_order(2).check(pa.array(["c", "b", "z"]), "email", pa.nulls(3, pa.string()))
    assert first.to_pylist() == [None, None]
    assert [r is not None for r in later["email"].to_pylist()] == [False, True]
    assert [r is not None for r in later["phone"].to_pylist()] == [False, True]
    assert [r is not None for r in third.to_pylist()] == [True, True, False]


def test_a_hash_collision_inside_a_chunk_is_not_a_duplicate(monkeypatch):
    monkeypatch.setattr(v, "_hash", lambda value: 7)  # every value hashes alike
    values = pa.array(["x", "y", "x", "z", "y"])
    reasons = v.duplicate_reasons(values, "email", pa.nulls(5, pa.string()))
    assert [r is not None for r in reasons.to_pylist()] == [False, False, True, False, True]


def test_missing_required_column_names_it_and_the_operation():
    schema = pa.schema([("Email", pa.string()), ("first_name", pa.string())])
    with pytest.raises(ExportError, match=r"operation 'add' needs a string column email \(found 'Email'"):
        v.require_columns(schema, ["email"], "add")


def test_required_column_must_be_text():
    with pytest.raises(ExportError, match="column 'profile_id' must be a string"):
        v.require_columns(pa.schema([("profile_id", pa.int64())]), ["profile_id"], "remove_profiles")


def test_any_of_columns():
    v.require_columns(pa.schema([("phone_number", pa.string())]), ["email", "phone_number"], "batch_consent", any_of=True)
    with pytest.raises(ExportError, match="email or phone_number"):
        v.require_columns(pa.schema([("x", pa.string())]), ["email", "phone_number"], "batch_consent", any_of=True)


def test_valid_e164_fast_path_never_accepts_what_libphonenumber_rejects():
    import random

    import phonenumbers

    rng = random.Random(5)
    values = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            values.append(e164)
            for _ in range(8):  # one digit changed, one dropped or one added
                digits = list(e164[1:])
                digits[rng.randrange(len(digits))] = str(rng.randrange(10))
                mutated = "+" + "".join(digits)
                r = rng.random()
                values.append(mutated[:-1] if r < 0.2 else mutated + "5" if r < 0.4 else mutated)
    values += ["+1415%07d" % rng.randrange(10**7) for _ in range(300)] + ["+4420%08d" % rng.randrange(10**8) for _ in range(300)]
    values = list(dict.fromkeys(values))
    fast = v.valid_e164(pa.array(values))
    assert fast.sum() > len(values) // 3
    for value, ok in zip(values, fast.tolist()):
        if ok:
            assert v.normalise_phone(value) == (value, None), value
    checked = v.check_phones(pa.array(values))
    assert checked.values.to_pylist() == [v.normalise_phone(x)[0] for x in values]
