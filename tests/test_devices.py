"""Device profiles: the bundled set loads, errors are clear, user folders override bundled profiles."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.devices import DeviceProfile, list_devices, load_device
from hwopt.errors import HwoptError
from hwopt.paths import data_dir

REQUIRED = {"rpi4", "rpi5", "jetson-orin-nano", "cuda-gpu", "x86-avx512", "arm64-a76"}


def test_all_bundled_profiles_load_and_are_consistent() -> None:
    devices = list_devices()
    assert REQUIRED <= set(devices)
    for name, dev in devices.items():
        assert isinstance(dev, DeviceProfile) and dev.name == name
        assert dev.preferred_runtime in dev.runtimes
        assert dev.sources, f"{name}: hardware numbers need sources"
        assert dev.peak.fp32_gops > 0 and dev.memory.bandwidth_gbs > 0


def test_required_hardware_facts() -> None:
    assert "dotprod" not in load_device("rpi4").cpu.isa
    assert "dotprod" in load_device("rpi5").cpu.isa
    orin = load_device("jetson-orin-nano")
    assert "tensorrt" in orin.runtimes and "2:4" in orin.sparse_kernels
    assert load_device("x86-avx512").present_here


def test_unknown_target_lists_the_valid_ones() -> None:
    with pytest.raises(HwoptError) as info:
        load_device("rpi9")
    msg = str(info.value)
    assert "'rpi9'" in msg and all(name in msg for name in REQUIRED)


def _profile(**changes) -> dict:
    raw = yaml.safe_load((data_dir("devices") / "rpi5.yaml").read_text())
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        (yaml.safe_dump(_profile(name="board", cpu={"name": "x", "cores": 0, "clock_ghz": 1, "isa": []})), "cpu.cores"),
        (yaml.safe_dump(_profile(name="board", runtimes=["onnxruntime"], preferred_runtime="litert")), "preferred_runtime"),
        (yaml.safe_dump(_profile(name="board", turbo=True)), "turbo"),
        (yaml.safe_dump(_profile(name="other")), "must match the file name"),
    ],
    ids=["syntax", "not-mapping", "bad-value", "preferred-not-listed", "unknown-field", "name-mismatch"],
)
def test_bad_profile_is_one_clear_error(tmp_path, text, message) -> None:
    (tmp_path / "board.yaml").write_text(text)
    with pytest.raises(HwoptError, match=message) as info:
        load_device("board", tmp_path)
    assert "\n" not in str(info.value) and "board.yaml" in str(info.value)


def test_user_folder_adds_and_overrides_profiles(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("HWOPT_DEVICES_DIR", raising=False)
    (tmp_path / "myboard.yaml").write_text(yaml.safe_dump(_profile(name="myboard")))
    (tmp_path / "rpi4.yaml").write_text(yaml.safe_dump(_profile(name="rpi4", description="my own rpi4")))

    assert load_device("myboard", tmp_path).cpu.name == load_device("rpi5").cpu.name
    assert load_device("rpi4", tmp_path).description == "my own rpi4"
    assert load_device("rpi4").description != "my own rpi4"
    assert REQUIRED | {"myboard"} <= set(list_devices(tmp_path))

    monkeypatch.setenv("HWOPT_DEVICES_DIR", str(tmp_path))
    assert load_device("rpi4").description == "my own rpi4"
    assert "myboard" in list_devices()


def test_devices_cli_reads_devices_dir_and_env(tmp_path) -> None:
    (tmp_path / "myboard.yaml").write_text(yaml.safe_dump(_profile(name="myboard")))
    runner = CliRunner()
    flag = runner.invoke(app, ["devices", "--json", "--devices-dir", str(tmp_path)], env={"HWOPT_DEVICES_DIR": ""})
    env = runner.invoke(app, ["devices", "--json"], env={"HWOPT_DEVICES_DIR": str(tmp_path)})
    plain = runner.invoke(app, ["devices", "--json"], env={"HWOPT_DEVICES_DIR": ""})
    for result in (flag, env, plain):
        assert result.exit_code == 0, result.output
    names = lambda r: {d["name"] for d in json.loads(r.stdout)}  # noqa: E731
    assert "myboard" in names(flag) and "myboard" in names(env) and "myboard" not in names(plain)
    assert REQUIRED <= names(plain)
