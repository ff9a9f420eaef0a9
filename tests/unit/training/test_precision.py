"""Which precision runs where: native bf16 detection and the auto choice."""

from __future__ import annotations

import pytest
import torch

from resume_ner.training import precision


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("flags", "expected"), [({"avx512_bf16"}, True), ({"amx_bf16", "avx2"}, True),
                                                 ({"avx512f", "avx2"}, False), (set(), False)])
def test_auto_picks_bf16_only_on_cpus_that_have_it_natively(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    cpu = torch.device("cpu")
    assert precision.use_bf16("auto", cpu) is expected
    assert precision.use_bf16("fp32", cpu) is False and precision.use_bf16("bf16", cpu) is True


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision 'fp16': expected one of auto, fp32, bf16"):
        precision.use_bf16("fp16", torch.device("cpu"))


def test_autocast_runs_matmuls_in_bf16_only_when_enabled():
    a = torch.ones(4, 4)
    with precision.autocast(torch.device("cpu"), True):
        assert (a @ a).dtype == torch.bfloat16
    with precision.autocast(torch.device("cpu"), False):
        assert (a @ a).dtype == torch.float32
