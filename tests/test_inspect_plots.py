"""``legcf inspect RUN --plot DIR`` through the CLI: valid PNGs, their paths printed, and only
the curves for a layer without an assignment."""

from __future__ import annotations

import json
import struct

from helpers import DIM, LAYERS, TRAIN_OPTS, assert_clean_error, copy_run, invoke, invoke_ok, snapshot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL = ["curves.png", "usage.png", "weights.png", "projection.png"]


def assert_png(path) -> None:
    """A PNG file with an image in it: the signature, an IHDR of non-zero size, an IEND."""
    payload = path.read_bytes()
    assert payload.startswith(PNG_SIGNATURE), path
    assert payload[12:16] == b"IHDR" and payload.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), path
    width, height = struct.unpack(">II", payload[16:24])
    assert width > 100 and height > 100, (path, width, height)


def test_a_legcf_run_gets_every_plot_and_their_paths_printed(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    before = snapshot(run)
    out = tmp_path / "plots"
    result = invoke_ok("inspect", run, "--plot", out)
    lines = result.stdout.splitlines()
    printed = [line.removeprefix("wrote ") for line in lines if line.startswith("wrote ")]
    assert printed == [str(out / name) for name in ALL]
    assert sorted(p.name for p in out.iterdir()) == sorted(ALL)  # no temporary files left
    for name in ALL:
        assert_png(out / name)
    assert snapshot(run) == before  # the run itself is only read


def test_json_lists_the_plots(trained_run, tmp_path):
    summary = json.loads(invoke_ok("inspect", trained_run, "--plot", tmp_path, "--json").stdout)
    assert summary["plots"] == [str(tmp_path / name) for name in ALL] and "plots_skipped" not in summary


def test_a_pretrained_only_run_plots_s0(partitioned_run, tmp_path):
    run = copy_run(partitioned_run, tmp_path / "run")
    invoke_ok("pretrain", run, "--dim", DIM, "--layers", LAYERS, "--epochs", 2, *TRAIN_OPTS)
    invoke_ok("inspect", run, "--plot", tmp_path / "plots")
    for name in ALL:
        assert_png(tmp_path / "plots" / name)


def test_a_layer_without_assignment_gets_the_curves_only(prepared_run, tmp_path):
    run = copy_run(prepared_run, tmp_path / "run")
    invoke_ok("pretrain", run, "--embedding", "full", "--dim", 8, "--layers", 1, "--epochs", 2, *TRAIN_OPTS)
    result = invoke_ok("inspect", run, "--plot", tmp_path / "plots")
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["curves.png"]
    assert_png(tmp_path / "plots" / "curves.png")
    assert f"wrote {tmp_path / 'plots' / 'curves.png'}" in result.stdout
    assert "skipped usage, weights, projection" in result.stderr and "full" in result.stderr


def test_plots_need_a_run_directory(exported_model, tmp_path):
    assert_clean_error(invoke("inspect", exported_model, "--plot", tmp_path / "plots"), "run directory")
    assert not (tmp_path / "plots").exists()
