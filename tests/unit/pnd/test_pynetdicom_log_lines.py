"""Lines dcmrecvd logs on pynetdicom's loggers are pynetdicom's own texts, never ours.

reactor.py and fastpath.py replace pynetdicom's DUL and association loops and its C-STORE
dispatch. Where those loops logged, ours log the same text on the same logger, so that a
log filter, `-ll trace` output and tests/scenarios/test_fuzz.py's crash markers see the
same lines whichever path served the association. This test pins that rule: every literal
logged on a `pynetdicom*` logger anywhere in dcmrecvd must be a text of the pynetdicom
module that logger belongs to (a string constant there, or two joined, as pynetdicom
joins "Association Aborted" and " (A-P-ABORT)"); lines of our own go to our loggers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest

from tests.support.paths import REPO

PACKAGE = REPO / "dcmrecvd"
PYNETDICOM = Path(pynetdicom.__file__).parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _pynetdicom_loggers(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound to logging.getLogger("pynetdicom..."): name -> logger."""
    found = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == "getLogger"
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and str(call.args[0].value).startswith("pynetdicom")
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = str(call.args[0].value)
    return found


def logged_on_pynetdicom() -> Iterator[tuple[str, str, ast.expr, str]]:
    """(file:line, logger, first argument, level) of every call on a pynetdicom logger."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        loggers = _pynetdicom_loggers(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in loggers
                and node.args
            ):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                yield where, loggers[node.func.value.id], node.args[0], node.func.attr


def constants(logger: str) -> set[str]:
    """The string constants (and f-string pieces) of the modules behind `logger`."""
    module = logger.removeprefix("pynetdicom").lstrip(".")
    files = [PYNETDICOM / f"{module}.py"] if module else sorted(PYNETDICOM.glob("*.py"))
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def texts(argument: ast.expr) -> list[str] | None:
    """The literal pieces of a logged message; None where it is not a literal."""
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return [argument.value]
    if isinstance(argument, ast.JoinedStr):
        return [
            str(part.value)
            for part in argument.values
            if isinstance(part, ast.Constant) and str(part.value).strip()
        ]
    return None


def is_pynetdicoms(text: str, known: set[str]) -> bool:
    return text in known or any(
        text.startswith(head) and text[len(head) :] in known for head in known if head
    )


CALLS = list(logged_on_pynetdicom())


def test_there_are_lines_to_check() -> None:
    # reactor.py and fastpath.py log pynetdicom's lines; finding none means a broken walk.
    assert len(CALLS) >= 8


@pytest.mark.parametrize(("where", "logger", "argument", "level"), CALLS, ids=[c[0] for c in CALLS])
def test_a_line_on_a_pynetdicom_logger_is_pynetdicoms_text(
    where: str, logger: str, argument: ast.expr, level: str
) -> None:
    pieces = texts(argument)
    if pieces is None:
        # pynetdicom logs an exception's traceback after its own error line, so do we.
        assert level == "exception" and isinstance(argument, ast.Name), (
            f"{where}: a message that is not a literal on {logger}"
        )
        return
    known = constants(logger)
    for piece in pieces:
        assert is_pynetdicoms(piece, known), f"{where}: {piece!r} is not {logger}'s text"
