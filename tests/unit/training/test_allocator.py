"""The allocator thresholds of prediction: set on glibc, left alone elsewhere or when the user set their own."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from resume_ner.training import allocator


class FakeLibc:
    """A fake of glibc's ``mallopt`` that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return libc


def test_glibc_gets_both_thresholds(fake_libc):
    assert allocator.reuse_freed_memory() is True
    assert fake_libc.calls == [(-3, allocator.MMAP_THRESHOLD_BYTES), (-1, allocator.TRIM_THRESHOLD_BYTES)]


@pytest.mark.parametrize("name", allocator.USER_SETTINGS)
def test_the_users_own_allocator_settings_win(fake_libc, monkeypatch, name):
    monkeypatch.setenv(name, "65536")
    assert allocator.reuse_freed_memory() is False and fake_libc.calls == []


def test_another_c_library_is_left_alone(fake_libc, monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.reuse_freed_memory() is False and fake_libc.calls == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_real_glibc_accepts_the_thresholds():
    code = "from resume_ner.training.allocator import reuse_freed_memory as r; print(r())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert result.stdout.strip() == "True"
