"""The built packages as files, before any system runs them.

The .rpm: what it requires and provides (EL9 must be able to satisfy the one and must not
see the vendored libraries in the other), rpmlint, and the files it lays out in a scratch
root against the .deb's. The Python distribution: the sdist and the wheel as PyPI's twine
takes them, and the wheel installed with pip into a fresh venv.

The packages come from scripts/package and the distribution from `python -m build`, as a
release would make them; the e2e tests (tests/e2e) boot what they install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.slow

ROOT = REPO
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TIMEOUT = 900.0
# What both packages put outside the private library, by the path of each.
SHARED_PATHS = (
    "etc/dcmrecvd",
    "usr/bin",
    "usr/lib/systemd/system",
    "usr/lib/sysusers.d",
    "usr/lib/tmpfiles.d",
    "usr/share/man",
    "usr/share/doc/dcmrecvd/examples",
)


def run(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(arg) for arg in argv],
        env=env if env is not None else {"PATH": CLEAN_PATH, "HOME": str(Path.home())},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@dataclass(frozen=True)
class Built:
    deb: Path
    rpm: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("packages")
    run(ROOT / "scripts/package", "--outdir", out)
    debs = list(out.glob(f"dcmrecvd_{VERSION}-1_all.deb"))
    rpms = list(out.glob(f"dcmrecvd-{VERSION}-1.*.rpm"))
    assert len(debs) == 1 and len(rpms) == 1, sorted(out.iterdir())
    return Built(debs[0], rpms[0])


def rpm_query(rpm: Path, *what: str) -> list[str]:
    return run("rpm", "-qp", *what, rpm).splitlines()


# --- the .rpm ------------------------------------------------------------------------------


def test_rpm_requires_only_the_interpreter_systemd_and_system_libraries(built: Built) -> None:
    requires = set(rpm_query(built.rpm, "--requires"))
    libraries = {r for r in requires if re.match(r"(libc|libsystemd)\.so\.\d", r)}
    rpm_features = {r for r in requires if r.startswith(("rpmlib(", "rtld("))}
    # Nothing from the vendored code: no python3.11dist(...), no python(abi), no
    # /usr/bin/python3 (EL9's is 3.9) from a vendored script's shebang.
    assert requires - libraries - rpm_features == {
        "/bin/sh",
        "/usr/bin/python3.11",
        "systemd",
        f"config(dcmrecvd) = {VERSION}-1",
    }
    assert libraries, requires
    assert rpm_query(built.rpm, "--conflicts") == ["dcmtk"]


def test_rpm_provides_nothing_of_the_vendored_code(built: Built) -> None:
    provides = set(rpm_query(built.rpm, "--provides"))
    release = f"{VERSION}-1"
    # The package under its name, its name with the architecture (dcmrecvd(x86-64)) and
    # its config file: no python3.11dist(pydicom), no systemd-python's extension modules.
    isa = {p for p in provides if re.fullmatch(rf"dcmrecvd\([\w-]+\) = {release}", p)}
    assert len(isa) == 1, provides
    assert provides - isa == {f"config(dcmrecvd) = {release}", f"dcmrecvd = {release}"}


def test_rpmlint_reports_nothing(built: Built) -> None:
    # What rpmlint may not report is filtered, with the reason, in rpmlint.toml.
    report = run("rpmlint", "-c", ROOT / "packaging/rpm/rpmlint.toml", built.rpm)
    assert " 0 errors, 0 warnings" in report, report


def test_rpm_marks_the_config_noreplace_and_keeps_data_private(built: Built) -> None:
    flags = dict(
        line.split(" ", 1)[::-1]
        for line in rpm_query(built.rpm, "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]")
    )
    # c: %config, n: noreplace.
    assert flags["/etc/dcmrecvd/dcmrecvd.conf"] == "cn"
    modes = rpm_query(
        built.rpm, "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]"
    )
    assert "drwxr-x--- dcmrecvd dcmrecvd /var/lib/dcmrecvd" in modes


def _files(tree: Path, under: Iterable[str]) -> dict[str, Path]:
    """Files and symlinks below the given paths of `tree`, by path without a .gz suffix."""
    found = {}
    for top in under:
        for path in (tree / top).rglob("*"):
            if path.is_file() or path.is_symlink():
                found[str(path.relative_to(tree)).removesuffix(".gz")] = path
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="rpm --root sets file owners: root only")
def test_rpm_and_deb_lay_out_the_same_files(built: Built, tmp_path: Path) -> None:
    rpm_root, deb_root = tmp_path / "rpm", tmp_path / "deb"
    rpm = ["rpm", f"--root={rpm_root}", "--dbpath=/var/lib/rpm"]
    run(*rpm, "--initdb")
    # --nodeps: the scratch root has no packages; --noscripts: nor a shell to run the
    # scriptlets with (the e2e tests run them in a booted Debian 12).
    run(*rpm, "-i", "--nodeps", "--noscripts", built.rpm)
    run("dpkg-deb", "-x", built.deb, deb_root)

    from_rpm, from_deb = _files(rpm_root, SHARED_PATHS), _files(deb_root, SHARED_PATHS)
    assert sorted(from_rpm) == sorted(from_deb)
    assert "usr/lib/systemd/system/dcmrecvd.service" in from_rpm
    assert "usr/lib/systemd/system/dcmrecvd-metrics.socket" in from_rpm
    assert "usr/share/man/man5/dcmrecvd.conf.5" in from_rpm
    examples = "usr/share/doc/dcmrecvd/examples/"
    assert (
        from_rpm[examples + "haproxy.cfg"].read_text()
        == (ROOT / "etc/haproxy/dcmrecvd.cfg").read_text()
    )
    assert examples + "grafana-dashboard.json" in from_rpm
    for name, path in from_rpm.items():
        if path.is_symlink():
            assert os.readlink(path) == os.readlink(from_deb[name]), name
        elif not name.startswith(("usr/share/man/", "usr/bin/")):
            # The launcher's first line names each package's interpreter.
            assert path.read_bytes() == from_deb[name].read_bytes(), name
    assert (rpm_root / "var/lib/dcmrecvd").is_dir()
    conffiles = run("dpkg-deb", "--info", built.deb, "conffiles").split()
    assert conffiles == ["/etc/dcmrecvd/dcmrecvd.conf"]


def test_prometheus_client_is_a_dependency_of_the_deb_and_vendored_in_the_rpm(
    built: Built,
) -> None:
    depends = run("dpkg-deb", "--field", built.deb, "Depends")
    assert "python3-prometheus-client" in [item.strip() for item in depends.split(",")]
    deb_files = run("dpkg-deb", "--contents", built.deb)
    assert "/usr/lib/dcmrecvd/prometheus_client/" not in deb_files
    rpm_files = rpm_query(built.rpm, "--list")
    assert "/usr/lib/dcmrecvd/prometheus_client/__init__.py" in rpm_files
    # As pinned in vendor-rpm.txt.
    pinned = re.search(
        r"^prometheus_client==(\S+)", (ROOT / "packaging/vendor-rpm.txt").read_text(), re.MULTILINE
    )
    assert pinned is not None
    assert f"/usr/lib/dcmrecvd/prometheus_client-{pinned[1]}.dist-info/METADATA" in rpm_files


# --- the Python distribution ---------------------------------------------------------------


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{CLEAN_PATH}"}
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, env=env)
    made = sorted(out.iterdir())
    assert [p.name for p in made] == [
        f"dcmrecvd-{VERSION}-py3-none-any.whl",
        f"dcmrecvd-{VERSION}.tar.gz",
    ]
    return made


def test_twine_accepts_the_sdist_and_the_wheel(distribution: list[Path]) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{CLEAN_PATH}"}
    report = run(sys.executable, "-m", "twine", "check", "--strict", *distribution, env=env)
    assert report.count("PASSED") == 2, report


def test_the_wheel_installs_working_commands(distribution: list[Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    wheel = next(p for p in distribution if p.suffix == ".whl")
    # systemd-python is built from source here: libsystemd-dev and pkg-config from
    # scripts/bootstrap.
    run(venv / "bin/python", "-m", "pip", "install", "-q", wheel, env=dict(os.environ))
    assert run(venv / "bin/dcmrecvd", "--version").strip() == f"dcmrecvd {VERSION}"
    assert f"v{VERSION}" in run(venv / "bin/dcmrecv", "--version")
    # The package's data came along (the names of UIDs in dcmrecv's messages).
    listed = run(venv / "bin/python", "-m", "pip", "show", "-f", "dcmrecvd")
    assert "dcmrecvd/data/dcmtk-uid-names.tsv" in listed, listed
