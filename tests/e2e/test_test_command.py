"""``scripts/test`` on a machine without Chromium: installed with apt as root, or the
browser tests are skipped and the last line says so and why."""

import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

ONE_TEST = "tests/test_i18n.py::test_labels_translate"


def closed_port_url(scheme: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/x"


def stub(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


def run_test_command(tmp_path: Path, bin_dir: Path, chromium: Path) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CHROMIUM_PATH": str(chromium),
        # Only the embedded configuration: the servers' URLs point at closed ports.
        "TEST_DATABASE_URL": closed_port_url("postgres"),
        "TEST_REDIS_URL": closed_port_url("redis"),
        "TEST_AMQP_URL": closed_port_url("amqp"),
        "SOAK_SECONDS": "0",
    }
    return subprocess.run(
        [str(ROOT / "scripts" / "test"), "-p", "no:cacheprovider", "-q", ONE_TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_root_the_last_line_says_the_browser_tests_were_skipped(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir, "id", 'if [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi\n')
    missing = tmp_path / "no-chromium"
    result = run_test_command(tmp_path, bin_dir, missing)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last == (
        f"== browser tests SKIPPED: Chromium is not at {missing} and installing it needs root "
        "(as root: apt-get install chromium; or set CHROMIUM_PATH)"
    )


def test_as_root_it_installs_debians_chromium_with_apt(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root, as scripts/test's apt step does")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chromium = tmp_path / "chromium"
    calls = tmp_path / "apt-calls"
    # apt-get itself is stood in for (no change to this machine): it records its
    # arguments and "installs" the browser where the test command looks for it.
    stub(
        bin_dir,
        "apt-get",
        f'echo "$@" >> {calls}\nif [ "$1" = install ]; then ln -sf /bin/true {chromium}; fi\n',
    )
    result = run_test_command(tmp_path, bin_dir, chromium)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert calls.read_text().splitlines() == ["update -q", "install -y -q chromium"]
    assert "installing Debian's Chromium" in result.stdout
    assert "SKIPPED" not in result.stdout
