"""Path templates: parse()'s errors with their columns, render()'s examples, every hostile
value in every field, and a property over arbitrary bytes: the path stays a safe relative
path under the output directory."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcmrecvd.pathtemplate import (
    MAX_COMPONENT,
    MAX_PATH,
    RenderError,
    TemplateError,
    parse,
    render,
)

# pydicom warns instead of failing on bad bytes; render() must do neither.
pytestmark = pytest.mark.filterwarnings("error")

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_DATE = 0x00080020
STUDY_TIME = 0x00080030
ACQUISITION_DATE_TIME = 0x0008002A
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
MODALITY = 0x00080060
SOP_INSTANCE_UID = 0x00080018
STUDY_DESCRIPTION = 0x00081030  # LO
PATIENT_COMMENTS = 0x00104000  # LT: one value, a backslash is text

EXAMPLE = (
    "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{Modality}.{SOPInstanceUID}{extension}"
)
VALUES = {
    PATIENT_ID: b"PAT01 ",
    STUDY_UID: b"1.2.3\0",
    SERIES_UID: b"1.2.3.4\0",
    MODALITY: b"CT",
    SOP_INSTANCE_UID: b"1.2.3.4.5\0",
}
# A field alone as a directory, one inside text, one in the file name.
EVERY_FIELD = "{PatientID}/x{PatientName}x/{StudyDescription}.{SOPInstanceUID}{extension}"
CHARACTER_SETS = [
    None,
    "ISO_IR 100",
    "ISO_IR 192",
    "GB18030",
    "\\ISO 2022 IR 87",
    "\\ISO 2022 IR 149",
    "ISO_IR 13\\ISO 2022 IR 87",
    "NO SUCH SET",
]


def path_of(
    template: str,
    values: Mapping[int, bytes | None],
    *,
    character_set: str | None = None,
    extension: str = ".dcm",
    prefix: str = "CT",
) -> str:
    return render(
        parse(template),
        values,
        character_set=character_set,
        extension=extension,
        prefix=prefix,
    )


def assert_safe(path: str) -> None:
    assert not path.startswith("/")
    assert os.path.normpath(path) == path
    assert len(path.encode()) <= MAX_PATH
    for component in path.split("/"):
        assert component not in ("", ".", "..")
        assert not component.startswith(".")
        assert len(component.encode()) <= MAX_COMPONENT
        for char in component:
            assert char not in '\\:*?"<>|', path
            assert unicodedata.category(char)[0] != "C", path
            assert unicodedata.category(char) not in ("Zl", "Zp"), path


# parse


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "column 1: the template is empty"),
        (
            "{PatientID}/{StudyInstanceUID}/{PatientName2}/{SOPInstanceUID}",
            "column 33: unknown DICOM keyword 'PatientName2'",
        ),
        ("/{SOPInstanceUID}", "column 1: the path must be relative: it may not start with '/'"),
        ("a//{SOPInstanceUID}", "column 3: empty path component ('//')"),
        ("a/", "column 3: the template ends with '/': the file name is missing"),
        ("{SOPInstanceUID}/", "column 18: the template ends with '/': the file name is missing"),
        ("./{SOPInstanceUID}", "column 1: '.' is not allowed as a path component"),
        ("a/../{SOPInstanceUID}", "column 3: '..' is not allowed as a path component"),
        ("a/.x{SOPInstanceUID}", "column 3: a path component may not start with '.'"),
        (
            "{SOPInstanceUID}/{PatientID}",
            "column 18: the file name (the last component) has no {SOPInstanceUID}: "
            "different objects would get the same name",
        ),
        # The date's "/" moves the file name past the instance UID.
        (
            "{SOPInstanceUID}{StudyDate:%Y/%m}",
            "column 31: the file name (the last component)"
            " has no {SOPInstanceUID}: different objects would get the same name",
        ),
        (
            "{{SOPInstanceUID}}",
            "column 1: the file name (the last component) has no "
            "{SOPInstanceUID}: different objects would get the same name",
        ),
        ("{extension}/{SOPInstanceUID}", "column 1: {extension} belongs in the file name"),
        ("{SOPInstanceUID", "column 1: '{' is not closed: write '{{' for a literal brace"),
        ("a}{SOPInstanceUID}", "column 2: single '}': write '}}' for a literal brace"),
        ("{}{SOPInstanceUID}", "column 2: empty field: write '{{' for a literal brace"),
        (
            "{Rows}{SOPInstanceUID}",
            "column 2: Rows (0028,0010) has VR US: only text elements can name a path",
        ),
        (
            "{ReferencedImageSequence}{SOPInstanceUID}",
            "column 2: ReferencedImageSequence (0008,1140) is a sequence",
        ),
        (
            "{PixelData}{SOPInstanceUID}",
            "column 2: PixelData (7FE0,0010) does not precede Pixel Data",
        ),
        (
            "{DataSetTrailingPadding}{SOPInstanceUID}",
            "column 2: DataSetTrailingPadding (FFFC,FFFC) does not precede Pixel Data",
        ),
        (
            "{AffectedSOPInstanceUID}{SOPInstanceUID}",
            "column 2: AffectedSOPInstanceUID "
            "(0000,1000) is a command or File Meta element, not in the dataset",
        ),
        (
            "{TransferSyntaxUID}{SOPInstanceUID}",
            "column 2: TransferSyntaxUID (0002,0010) "
            "is a command or File Meta element, not in the dataset",
        ),
        (
            "{PatientID:%Y}{SOPInstanceUID}",
            "column 11: only DA, TM and DT take a format; PatientID is LO",
        ),
        ("{StudyDate:}{SOPInstanceUID}", "column 12: empty format"),
        (
            "{StudyDate:%Y-%b}{SOPInstanceUID}",
            "column 15: StudyDate (DA) takes only %Y%m%d, not '%b'",
        ),
        (
            "{StudyDate:%Y/%H}/{SOPInstanceUID}",
            "column 15: StudyDate (DA) takes only %Y%m%d, not '%H'",
        ),
        (
            "{StudyTime:%H%%}{SOPInstanceUID}",
            "column 14: StudyTime (TM) takes only %H%M%S, not '%%'",
        ),
        ("{StudyTime:%H%}{SOPInstanceUID}", "column 14: StudyTime (TM) takes only %H%M%S, not '%'"),
        (
            "{AcquisitionDateTime:%Y:%S}{SOPInstanceUID}",
            "column 24: ':' is not allowed in a file name",
        ),
        ("{StudyDate:%Y//%m}/{SOPInstanceUID}", "column 15: empty path component ('//')"),
        (
            "{StudyDate:/%Y}/{SOPInstanceUID}",
            "column 1: the path must be relative: it may not start with '/'",
        ),
        ("x/{StudyDate:.%Y}/{SOPInstanceUID}", "column 3: a path component may not start with '.'"),
        ("{PatientID|}/{SOPInstanceUID}", "column 11: empty fallback"),
        ("{PatientID|  }/{SOPInstanceUID}", "column 11: empty fallback"),
        ("{SOPInstanceUID}{extension|x}", "column 27: {extension} takes no fallback"),
        ("{SOPInstanceUID}{extension:%Y}", "column 27: {extension} takes no format"),
        ("{prefix:%Y}{SOPInstanceUID}", "column 8: {prefix} takes no format"),
        ("a:b/{SOPInstanceUID}", "column 2: ':' is not allowed in a file name"),
        ("a\\b/{SOPInstanceUID}", "column 2: '\\\\' is not allowed in a file name"),
        ("a\0b/{SOPInstanceUID}", "column 2: '\\x00' is not allowed in a file name"),
        ("a\nb/{SOPInstanceUID}", "column 2: '\\n' is not allowed in a file name"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse(text)
    assert str(caught.value) == message
    assert caught.value.column == int(message.split(":", maxsplit=1)[0].split()[1])


def test_tags_and_keywords() -> None:
    template = parse(EXAMPLE.replace("{Modality}", "{prefix}{StudyDate:%Y|x}"))
    assert template.keywords == {
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "StudyDate",
        "SOPInstanceUID",
    }
    assert template.tags == {PATIENT_ID, STUDY_UID, SERIES_UID, STUDY_DATE, SOP_INSTANCE_UID}


# render: the examples


def test_example() -> None:
    assert path_of(EXAMPLE, VALUES) == "PAT01/1.2.3/1.2.3.4/CT.1.2.3.4.5.dcm"


def test_literal_braces_and_text() -> None:
    assert path_of("a {{b}}/{{{SOPInstanceUID}}}", VALUES) == "a {b}/{1.2.3.4.5}"


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("{StudyDate:%Y/%m}", b"20261207", "2026/12/1.2.3.4.5"),
        ("{StudyDate:%Y/%m/%d}", b"20261207 ", "2026/12/07/1.2.3.4.5"),
        ("{StudyDate:%Y-%m-%d}", b"20261207", "2026-12-07/1.2.3.4.5"),
        ("{StudyDate:%d%m%Y}", b"20261207\\20270101", "07122026/1.2.3.4.5"),
        ("{StudyDate:%Y/%m}", b"20260230", "UNKNOWN/1.2.3.4.5"),
        ("{StudyDate:%Y/%m|NODATE}", b"2026-12-07", "NODATE/1.2.3.4.5"),
        ("{StudyDate:%Y/%m|NODATE}", b"2026120", "NODATE/1.2.3.4.5"),
        ("{StudyDate:%Y/%m|NODATE}", b"", "NODATE/1.2.3.4.5"),
        ("{StudyDate:%Y/%m|NODATE}", b"\xff\xff\xff\xff1207", "NODATE/1.2.3.4.5"),
        ("{StudyDate:%Y/%m|NODATE}", None, "NODATE/1.2.3.4.5"),
    ],
)
def test_dates(field: str, value: bytes | None, path: str) -> None:
    values = {STUDY_DATE: value, SOP_INSTANCE_UID: b"1.2.3.4.5"}
    assert path_of(f"{field}/{{SOPInstanceUID}}", values, extension="") == path


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (b"143005.123456", "14/30/05"),
        (b"1430", "14/30/00"),
        (b"14", "14/00/00"),
        (b"2430", "T"),
        (b"1460", "T"),
        (b"143061", "T"),
        (b"14:30:05", "T"),
    ],
)
def test_times(value: bytes, path: str) -> None:
    values = {STUDY_TIME: value, SOP_INSTANCE_UID: b"1"}
    assert path_of("{StudyTime:%H/%M/%S|T}/{SOPInstanceUID}", values, extension="") == path + "/1"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (b"20261207143005.5+0100", "2026/12/07/14/30/05"),
        (b"202612", "2026/12/01/00/00/00"),
        (b"2026", "2026/01/01/00/00/00"),
        (b"20261307", "T"),
        (b"2026120714300", "T"),
    ],
)
def test_date_times(value: bytes, path: str) -> None:
    values = {ACQUISITION_DATE_TIME: value, SOP_INSTANCE_UID: b"1"}
    template = "{AcquisitionDateTime:%Y/%m/%d/%H/%M/%S|T}/{SOPInstanceUID}"
    assert path_of(template, values, extension="") == path + "/1"


@pytest.mark.parametrize(
    ("field", "values", "name"),
    [
        ("{PatientID|NOID}", {}, "NOID"),
        ("{PatientID|NOID}", {PATIENT_ID: None}, "NOID"),
        ("{PatientID|NOID}", {PATIENT_ID: b""}, "NOID"),
        ("{PatientID|NOID}", {PATIENT_ID: b"    "}, "NOID"),
        ("{PatientID|NOID}", {PATIENT_ID: b" \0"}, "NOID"),
        ("{PatientID|NOID}", {PATIENT_ID: b"\\B"}, "NOID"),
        ("{PatientID}", {}, "UNKNOWN"),
        ("{PatientID| no id }", {}, "no id"),
        ("{PatientID|a:b/c}", {}, "a_b_c"),
        ("{PatientID|..}", {}, "_."),
        ("{prefix}", {}, "CT"),
    ],
)
def test_fallbacks(field: str, values: dict[int, bytes | None], name: str) -> None:
    values = {SOP_INSTANCE_UID: b"1", **values}
    assert path_of(f"{field}/{{SOPInstanceUID}}", values, extension="") == f"{name}/1"


@pytest.mark.parametrize(
    ("field", "prefix", "name"),
    [("{prefix}", "MR", "MR"), ("{prefix}", "", "UNKNOWN"), ("{prefix|XX}", " ", "XX")],
)
def test_prefix(field: str, prefix: str, name: str) -> None:
    path = path_of(
        f"{field}.{{SOPInstanceUID}}{{extension}}", {SOP_INSTANCE_UID: b"1"}, prefix=prefix
    )
    assert path == f"{name}.1.dcm"


@pytest.mark.parametrize(
    ("extension", "name"),
    [("", "1"), (".dcm", "1.dcm"), ("/x\\y", "1_x_y"), ("\udcff\x00", "1__")],
)
def test_extension(extension: str, name: str) -> None:
    path = path_of("{SOPInstanceUID}{extension}", {SOP_INSTANCE_UID: b"1"}, extension=extension)
    assert path == name


# render: hostile values


HOSTILE = [
    b"../../etc",
    b"/abs",
    b"..",
    b".",
    b".hidden",
    b"a\\b",
    b"a\0b",
    b"\0",
    b"a\x01\x09\x0a\x0d\x1b\x1f\x7fb",
    b"a\xc2\x85\xc2\x9fb",
    b'a:*?"<>|b',
    b"a\xe2\x80\xaeb\xe2\x80\xa8c",
    b"A" * 300,
    b"\xc3\xa9" * 300,
    b"x" * 10_000,
    b"\xff\xfe\x80",
    b"",
    b"   ",
    None,
]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
@pytest.mark.parametrize(
    "tag", [PATIENT_ID, PATIENT_NAME, STUDY_DESCRIPTION, SOP_INSTANCE_UID], ids=hex
)
@pytest.mark.parametrize("character_set", CHARACTER_SETS)
def test_hostile_value_in_every_field(
    value: bytes | None, tag: int, character_set: str | None
) -> None:
    values = {
        PATIENT_ID: b"P",
        PATIENT_NAME: b"N",
        STUDY_DESCRIPTION: b"D",
        SOP_INSTANCE_UID: b"1.2",
        tag: value,
    }
    path = path_of(EVERY_FIELD, values, character_set=character_set)
    assert_safe(path)
    assert len(path.split("/")) == 3
    assert path.endswith(".dcm")


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (b"../../etc", "_._.._etc"),
        (b"/abs", "_abs"),
        (b"..", "_."),
        (b".", "_"),
        (b".hidden", "_hidden"),
        (b"a\\b", "a"),
        (b"a\0b\0", "a_b"),
        (b"a\x01\x09\x0a\x0d\x1b\x1f\x7fb", "a_______b"),
        (b'a:*?"<>|b', "a_______b"),
        (b"  padded  ", "padded"),
        (b"", "UNKNOWN"),
        (b"   ", "UNKNOWN"),
        (b"\0", "UNKNOWN"),
        (None, "UNKNOWN"),
    ],
    ids=repr,
)
def test_hostile_directory(value: bytes | None, name: str) -> None:
    values = {PATIENT_ID: value, SOP_INSTANCE_UID: b"1"}
    assert path_of("{PatientID}/{SOPInstanceUID}", values, extension="") == f"{name}/1"


def test_hostile_inside_text() -> None:
    values = {PATIENT_ID: b"../..", SOP_INSTANCE_UID: b"1"}
    assert path_of("a{PatientID}/{SOPInstanceUID}", values, extension="") == "a.._../1"


def test_backslash_is_text_in_single_valued_vrs() -> None:
    values = {PATIENT_COMMENTS: b"a\\b", SOP_INSTANCE_UID: b"1"}
    assert path_of("{PatientComments}/{SOPInstanceUID}", values, extension="") == "a_b/1"


@pytest.mark.parametrize(
    ("character_set", "value", "name"),
    [
        ("ISO_IR 192", "Müller^Jörg".encode(), "Müller^Jörg"),
        # Not UTF-8: read as latin-1 rather than refused.
        ("ISO_IR 192", b"M\xfcller\xff", "Müllerÿ"),
        ("ISO_IR 100", b"M\xfcller", "Müller"),
        (None, b"M\xfcller", "Müller"),
        ("NO SUCH SET", b"M\xfcller", "Müller"),
        # An unknown character set is read as latin-1, even where the bytes look like UTF-8.
        ("NO SUCH SET", "Müller".encode(), "MÃ¼ller"),
        # UTF-8 has no code extensions: an escape is a control character like any other.
        ("ISO_IR 192", b"\xc3\xa9\x1b$Bab", "é_$Bab"),
        # C1 controls under latin-1 are controls too.
        ("ISO_IR 100", b"a\x85b", "a_b"),
        # PS3.5 H.3.1: Japanese in ISO 2022 IR 87.
        (
            "\\ISO 2022 IR 87",
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
        ),
        # PS3.5 I.2: Korean in ISO 2022 IR 149 (escape sequences that Python does not read).
        (
            "\\ISO 2022 IR 149",
            b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^"
            b"\x1b$)C\xb1\xe6\xb5\xbf",
            "Hong^Gildong=洪^吉洞=홍^길동",
        ),
        # An escape sequence that no character set has, or bytes its set does not hold.
        # PS3.5 6.1.2.5.3: a single-byte code extension (latin-1 here) ends at ^ and =,
        # where the first character set (Cyrillic) is back (as pydicom reads it).
        ("ISO 2022 IR 144\\ISO 2022 IR 100", b"\x1b-A\xe9^\xe9", "é^щ"),
        ("ISO 2022 IR 144\\ISO 2022 IR 100", b"\x1b-A\xe9=\xe9", "é=щ"),
        ("\\ISO 2022 IR 87", b"\x1b$Zab", "_$Zab"),
        ("\\ISO 2022 IR 87", b"a\x1b$B\xff\xfe", "a_$Bÿþ"),
        # PS3.5 K: Chinese in GB18030; the second byte of 乗 is a backslash.
        ("GB18030", "Wang^XiaoDong=王^小东=".encode("gb18030"), "Wang^XiaoDong=王^小东="),
        ("GB18030", "乗\\x".encode("gb18030"), "乗"),
        ("GBK", "乗".encode("gbk"), "乗"),
    ],
)
def test_character_sets(character_set: str | None, value: bytes, name: str) -> None:
    values = {PATIENT_NAME: value, SOP_INSTANCE_UID: b"1"}
    path = path_of("{PatientName}/{SOPInstanceUID}", values, character_set=character_set)
    assert path == f"{name}/1"


def test_uids_are_ascii() -> None:
    values = {SOP_INSTANCE_UID: "1.2.é".encode()}
    path = path_of("{SOPInstanceUID}", values, character_set="ISO_IR 192", extension="")
    assert path == "1.2.\ufffd\ufffd"


# render: lengths


def test_long_file_name_keeps_its_extension() -> None:
    values = {SOP_INSTANCE_UID: b"1." * 200}
    path = path_of("{prefix}.{SOPInstanceUID}{extension}", values)
    assert path == ("CT." + "1." * 200)[: MAX_COMPONENT - 4] + ".dcm"


def test_long_text_after_the_extension_is_cut_at_the_end() -> None:
    values = {SOP_INSTANCE_UID: b"1", PATIENT_ID: b"P" * 300}
    path = path_of("{SOPInstanceUID}{extension}{PatientID}", values)
    assert path == "1.dcm" + "P" * (MAX_COMPONENT - 5)


def test_long_directory_is_cut_on_a_character_boundary() -> None:
    values = {PATIENT_NAME: "é".encode() * 300, SOP_INSTANCE_UID: b"1"}
    path = path_of("{PatientName}/{SOPInstanceUID}", values, character_set="ISO_IR 192")
    directory = path.split("/")[0]
    assert directory == "é" * (MAX_COMPONENT // 2)


def test_long_directory_starting_with_a_dot() -> None:
    values = {PATIENT_ID: b"." * 300, SOP_INSTANCE_UID: b"1"}
    path = path_of("{PatientID}/{SOPInstanceUID}", values, extension="")
    assert path == "_" + "." * (MAX_COMPONENT - 1) + "/1"


def test_too_long_path() -> None:
    template = "{PatientID}/" * 16 + "{SOPInstanceUID}"
    values = {PATIENT_ID: b"x" * 10_000, SOP_INSTANCE_UID: b"1"}
    with pytest.raises(RenderError, match=r"the path is 4097 bytes long, over the limit of 4000"):
        path_of(template, values, extension="")
    assert len(path_of("{PatientID}/" * 15 + "{SOPInstanceUID}", values).encode()) == 3841


# render: any bytes


HOSTILE_PIECES = st.sampled_from(
    [b".", b"..", b"/", b"\\", b"\0", b" ", b"\x1b$B", b"\x1b$)C", b"\x1b(B", b"\xff", b"\xc2\x85"]
    + [c.encode() for c in ("é", "山", "\u2028", "\u202e", "\U0001f600")]
    + [c.encode(encoding) for c, encoding in [("山", "gb18030"), ("乗", "gb18030")]]
)
RAW = st.one_of(
    st.none(),
    st.binary(max_size=600),
    st.lists(HOSTILE_PIECES, max_size=40).map(b"".join),
    # Long values: one piece many times.
    st.tuples(HOSTILE_PIECES | st.binary(min_size=1, max_size=3), st.integers(1, 400)).map(
        lambda repeated: repeated[0] * repeated[1]
    ),
)
TEMPLATE = parse(
    "{PatientID}/{StudyDate:%Y/%m|.}/{PatientName}x{StudyTime:%H}/"
    "{prefix}.{StudyDescription}.{SOPInstanceUID}{extension}"
)


@settings(max_examples=500, deadline=None)
@given(
    values=st.fixed_dictionaries({tag: RAW for tag in TEMPLATE.tags}),
    character_set=st.sampled_from(CHARACTER_SETS),
    extension=st.text(max_size=20),
    prefix=st.text(max_size=20),
)
def test_any_bytes_give_a_safe_relative_path(
    values: dict[int, bytes | None], character_set: str | None, extension: str, prefix: str
) -> None:
    path = render(TEMPLATE, values, character_set=character_set, extension=extension, prefix=prefix)
    assert_safe(path)
    assert len(path.split("/")) in (4, 5)
