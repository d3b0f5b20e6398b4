"""The one reader's rules for bank files and channel statements (headend/flatfile.py): lines and a
cut-off last line, text in the file's encoding, whole fen, trailer totals, profile settings; every
problem names the file's line. Both file kinds read through it: tests/bank and tests/recon."""

from __future__ import annotations

import pytest

from headend.bank import layout
from headend.flatfile import FileError, ProfileError, check_trailer, decode, profile_doc, split_lines, whole
from headend.reconcile import statement


def test_lines_lf_or_crlf_and_a_cut_off_last_line() -> None:
    assert split_lines(b"a\r\nb\nc\r\n") == ([b"a", b"b", b"c"], True)
    assert split_lines("a\nb") == (["a", "b"], False)
    assert split_lines(b"") == ([], True)


def test_text_in_the_wrong_encoding_names_its_line() -> None:
    data = "一\n二\n三\n".encode("gbk")
    assert decode(data, "gbk") == "一\n二\n三\n"
    with pytest.raises(FileError, match=r"^line 2: is not valid utf-8 text"):
        decode(b"ok\n\xff\xfe\n", "utf-8")
    with pytest.raises(FileError, match=r"^line 7: holder is not valid utf-8"):
        decode(b"\xff", "utf-8", 7, "holder")


@pytest.mark.parametrize("text, kw, want", [
    ("00120", {}, 120), (" 12 ", {"fen": True}, 12), ("-5", {"fen": True, "signed": True}, -5),
    ("12.50", {"fen": True}, "line 3: amount '12.50' has decimals; the file must give whole fen"),
    ("-5", {"fen": True}, "line 3: amount '-5' is not a whole number of fen"),
    ("x1", {}, "line 3: amount 'x1' is not a whole number"),
    ("١٢", {}, "line 3: amount '١٢' is not a whole number"),  # other scripts' digits are not fen
    ("", {"fen": True}, "line 3: amount '' is not a whole number of fen"),
])
def test_whole_numbers_only(text: str, kw: dict, want: int | str) -> None:
    if isinstance(want, int):
        assert whole(text, "amount", 3, **kw) == want
    else:
        with pytest.raises(FileError) as exc:
            whole(text, "amount", 3, **kw)
        assert str(exc.value) == want


def test_trailer_count_and_total() -> None:
    assert check_trailer(9, said_count=3, count=3, said_total=None, total=50) == []
    assert check_trailer(9, said_count=4, count=3, said_total=60, total=50, total_is=" debited") == [
        "line 9: trailer says 4 rows, the file has 3", "line 9: trailer total 60 fen debited, the rows add up to 50"]


def test_profile_settings_are_checked_once_for_both_file_kinds(tmp_path) -> None:
    assert profile_doc("", "p")["format"] == "csv" and profile_doc("", "p")["encoding"] == "utf-8"
    for text, msg in (('format = "xml"', "format must be fixed or csv"), ('encoding = "klingon"', "unknown encoding"),
                      ("= 1", "not TOML")):
        with pytest.raises(ProfileError, match=msg):
            profile_doc(text, "p")
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(statement.StatementError, match=msg):  # a statement profile says the same
            statement.load_profile(str(bad))
    with pytest.raises(ProfileError, match="p: missing 'bank'"):
        profile_doc("", "p", need=("bank",))
    assert layout.ProfileError is ProfileError and issubclass(ProfileError, statement.StatementError)
