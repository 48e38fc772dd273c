"""benchmarks/compare_checkpoints.py: what each set argument names."""

from pathlib import Path

import pytest


def test_parse_set_reads_checkpoints_and_folders(load_benchmark, tmp_path):
    cc = load_benchmark("compare_checkpoints")
    assert cc.parse_set("a=runs/x@9000") == ("a", Path("runs/x"), 9000, "ema")
    assert cc.parse_set("b=runs/x@9000:raw")[2:] == (9000, "raw")
    (tmp_path / "scans").mkdir()
    assert cc.parse_set(f"c={tmp_path / 'scans'}") == ("c", tmp_path / "scans", None, "")
    (tmp_path / "x@9000-ema").mkdir()  # a folder this script generated earlier
    assert cc.parse_set(f"f={tmp_path / 'x@9000-ema'}")[2] is None
    for bad in ("runs/x@9000", f"d={tmp_path / 'missing'}", "e=runs/x@last"):
        with pytest.raises(SystemExit, match="expected NAME=RUN@ITERATION"):
            cc.parse_set(bad)
