"""Execution-provider choice: CUDA when present and wanted, CPU otherwise, never a silent surprise."""

from __future__ import annotations

import logging

import pytest

from curate.errors import FacesmithError
from curate.faces.providers import CPU, CUDA, available_providers, resolve_providers


def test_auto_prefers_cuda_when_present():
    assert resolve_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers("auto", [CPU]) == [CPU]


def test_cpu_is_cpu_even_with_cuda():
    assert resolve_providers("cpu", [CUDA, CPU]) == [CPU]


def test_cuda_without_cuda_falls_back_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="curate.faces.providers"):
        assert resolve_providers("cuda", [CPU]) == [CPU]
    assert "CUDA was asked for" in caplog.text


def test_unknown_device_is_a_user_error():
    with pytest.raises(FacesmithError, match="unknown device 'gpu'"):
        resolve_providers("gpu", [CPU])


def test_this_onnxruntime_has_a_cpu_provider():
    assert CPU in available_providers()
