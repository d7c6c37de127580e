"""`python -m dpo_lab doctor`: each check reports a problem when there is one (GPUs and the network mocked)."""

from __future__ import annotations

import types
import urllib.error

import pytest
import torch

from dpo_lab import cli, get_config
from dpo_lab.course import doctor


def test_pinned_versions_are_compared_and_a_wrong_or_missing_one_is_a_problem(tmp_path):
    good = doctor.package_checks()
    assert [c.ok for c in good] == [True], good  # this environment is installed from requirements.txt
    req = tmp_path / "requirements.txt"
    req.write_text(
        f"# pins\ntorch=={torch.__version__.split('+')[0]}\npandas==0.0.1  # too old\nno-such-package==1.0\n-e .\n"
    )
    (check,) = doctor.package_checks(req)
    assert check.ok is False
    assert "pandas" in check.value and "需要 0.0.1" in check.value and "no-such-package 未安裝" in check.value
    assert "torch" not in check.value  # 2.13.0+cpu matches 2.13.0
    assert "pip install -r requirements.txt" in check.fix


def _fake_gpu(monkeypatch, name: str, gib: float, cc: tuple[int, int]):
    props = types.SimpleNamespace(name=name, total_memory=int(gib * 2**30), major=cc[0], minor=cc[1])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)


def test_gpu_memory_compute_capability_and_precision_support_are_reported(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla T4", 14.6, (7, 5))
    t4 = doctor.torch_checks("gpu")[1]
    assert t4.ok is True and "Tesla T4" in t4.value and "compute capability 7.5" in t4.value
    assert "bf16 不支援" in t4.value and "fp16 支援" in t4.value
    _fake_gpu(monkeypatch, "NVIDIA A10G", 22.0, (8, 6))
    assert "bf16 支援" in doctor.torch_checks("gpu")[1].value
    _fake_gpu(monkeypatch, "GeForce GTX 1060", 5.9, (6, 1))
    small = doctor.torch_checks("gpu")[1]
    assert small.ok is False and "LoRA" in small.fix


def test_no_cuda_is_a_problem_only_for_the_gpu_profile(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert doctor.torch_checks("cpu")[1].ok is None
    assert doctor.torch_checks("gpu")[1].ok is False


def test_the_hub_is_needed_only_by_the_gpu_profile(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert doctor.hub_check("cpu").ok is None and doctor.hub_check("gpu").ok is False
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(url, timeout):
        assert timeout == 0.5
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(doctor.urllib.request, "urlopen", unreachable)
    cpu, gpu = doctor.hub_check("cpu", timeout=0.5), doctor.hub_check("gpu", timeout=0.5)
    assert cpu.ok is None and "no route to host" in cpu.value
    assert gpu.ok is False and "no route to host" in gpu.value


def test_too_little_disk_is_a_problem(monkeypatch, tmp_path):
    assert doctor.disk_check("smoke", tmp_path).ok is True
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=0.5 * 2**30))
    check = doctor.disk_check("gpu", tmp_path)
    assert check.ok is False and "0.5 GB" in check.value


def test_expected_wall_time_is_the_measured_step_times_times_the_profiles_steps():
    config = get_config("cpu")
    steps = {"sft_step": 0.5, "dpo_step": 0.4, "forward_16": 0.1, "token_16": 0.01}
    stages = doctor.expected_lab_seconds(config, steps)
    assert (config.n_judge_prompts, config.n_safety, config.max_new_tokens) == (200, 200, 128)
    assert stages["02 SFT"] == pytest.approx(1500 * 0.5 + 60 * 8 * 0.1)  # 1500 steps, an evaluation every 25
    assert stages["03 DPO"] == pytest.approx(200 * 0.4 + 8 * 4 * 8 * 0.1)
    assert stages["04 evaluation"] == pytest.approx(100 * 128 * 0.01)  # 1600 answers, 16 per batch
    measured = doctor.measure_step_seconds(get_config("smoke"))
    assert set(measured) == set(steps) | {"tokens"} and all(v > 0 for v in measured.values())
    assert 8 <= measured["tokens"] <= get_config("smoke").max_length  # measured on the offline corpus


def test_doctor_exits_non_zero_with_a_line_for_each_problem(monkeypatch, capsys):
    assert cli.main(["doctor", "--profile", "smoke", "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert "0 個問題" in out and "profile auto" in out and "❌" not in out
    problems = [doctor.Check("套件版本", "pandas 0.0.1（需要 3.1.1）", False, "pip install -r requirements.txt")]
    monkeypatch.setattr(doctor, "package_checks", lambda: problems)
    monkeypatch.setattr(doctor, "disk_check", lambda p: doctor.Check("可用磁碟", "0.1 GB", False, "清出空間"))
    assert cli.main(["doctor", "--profile", "smoke", "--no-timing"]) == 1
    out = capsys.readouterr().out
    assert "❌ 套件版本：pandas 0.0.1（需要 3.1.1）  → pip install -r requirements.txt" in out
    assert "❌ 可用磁碟" in out and "2 個問題" in out
