"""ratgan.runs (the run-folder layout) and ratgan.devices (device names)."""

import json

import pytest
import torch

from ratgan.config import load_config
from ratgan.devices import select_device
from ratgan.errors import RatganError
from ratgan.runs import (
    RunData,
    RunScan,
    is_run_folder,
    read_run_config,
    read_run_data,
    run_paths,
    write_run_config,
    write_run_data,
)


def test_data_record_round_trip_and_its_json_form(tmp_path):
    data = RunData(
        source="/data/cohort",
        entries=[RunScan("/data/a.nii.gz", "/data/la.nii.gz"), RunScan("/data/b.nii.gz", None)],
        infos=[{"shape": [64, 64, 40]}, {"shape": [64, 64, 40]}],
    )
    path = write_run_data(tmp_path, data)
    assert path == tmp_path / "data.json"
    assert read_run_data(tmp_path) == data
    assert json.loads(path.read_text()) == {
        "source": "/data/cohort",
        "entries": [
            {"image": "/data/a.nii.gz", "label": "/data/la.nii.gz"},
            {"image": "/data/b.nii.gz", "label": None},
        ],
        "infos": [{"shape": [64, 64, 40]}, {"shape": [64, 64, 40]}],
    }


def test_config_round_trip(tmp_path):
    cfg = load_config("tiny", {"train.seed": 11})
    assert write_run_config(tmp_path, cfg) == tmp_path / "config.yaml"
    back = read_run_config(tmp_path)
    assert back.to_dict() == cfg.to_dict() and back.train.seed == 11


def test_a_folder_without_config_or_data_is_named_in_the_error(tmp_path):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    with pytest.raises(RatganError, match=f"{folder}.*config.yaml"):
        read_run_config(folder)
    with pytest.raises(RatganError, match=f"{folder}.*data.json"):
        read_run_data(folder)


def test_a_damaged_data_record_is_a_clear_error(tmp_path):
    (tmp_path / "data.json").write_text('{"entries": []}')
    with pytest.raises(RatganError, match="data.json is damaged"):
        read_run_data(tmp_path)


def test_layout_and_run_folder_detection(tmp_path):
    paths = run_paths(tmp_path)
    assert paths.metrics == tmp_path / "metrics.jsonl"
    assert paths.sample(12) == tmp_path / "samples" / "iter_0000012.png"
    assert not is_run_folder(tmp_path)
    write_run_config(tmp_path, load_config("tiny"))
    assert not is_run_folder(tmp_path)  # no checkpoints folder yet
    (tmp_path / "checkpoints").mkdir()
    assert is_run_folder(tmp_path)


def test_select_device_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    expected = {"cuda"} if torch.cuda.is_available() else {"mps", "cpu"}
    assert select_device("auto").type in expected


@pytest.mark.parametrize("name", ["gpu", "banana", "cuda:x"])
def test_a_bad_device_name_is_a_ratgan_error(name):
    with pytest.raises(RatganError, match="not a device name"):
        select_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_ratgan_error():
    with pytest.raises(RatganError, match="no CUDA GPU"):
        select_device("cuda")
