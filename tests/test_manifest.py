"""The manifest is checked against one schema on read; a malformed one gets one line whose
way out (``legcf prepare`` on the same directory) works and loses no other file."""

from __future__ import annotations

import json

import pytest
from helpers import assert_clean_error, copy_run, invoke, invoke_ok, read_manifest, snapshot

from legcf_core.artifacts import MALFORMED_MANIFEST
from legcf_core.manifest import ManifestProblem, check_manifest


def _without(*path: str):
    def change(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def _setting(value, *path: str):
    def change(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


# (id, change of a trained run's manifest, the dotted field the message names)
MALFORMED = [
    ("no-stages", _without("stages"), "stages is missing"),
    ("no-dataset", _without("dataset"), "dataset is missing"),
    ("entry-without-config", _without("stages", "partition", "config"), "stages.partition.config"),
    ("entry-without-metrics", _without("stages", "pretrain", "metrics"), "stages.pretrain.metrics"),
    ("list-for-object", _setting([], "stages", "refine"), "stages.refine must be an object"),
    ("list-for-stages", _setting([1, 2], "stages"), "stages must be an object"),
    ("text-for-number", _setting("0.1", "stages", "pretrain", "metrics", "ndcg@20"), "ndcg@20"),
    ("text-for-c", _setting("50", "stages", "partition", "config", "codebook_size"), "codebook_size"),
    ("bool-for-int", _setting(True, "stages", "partition", "config", "per_entity"), "per_entity"),
    ("bad-digest", _setting({"data.safetensors": "abc"}, "stages", "pretrain", "inputs"), "sha256"),
    ("unknown-stage", _setting({}, "stages", "deploy"), "stages.deploy is not a known field"),
    ("kept-unknown", _setting("best", "stages", "refine", "kept"), "stages.refine.kept"),
    ("version-as-text", _setting("1", "format_version"), "format_version"),
    ("deep-but-parsable", _setting(json.loads("[" * 200 + "]" * 200), "stages", "refine", "note"), "nested"),
]


@pytest.fixture
def trained_copy(tmp_path, trained_run):
    return copy_run(trained_run, tmp_path / "run")


def _write(run_dir, text: str | bytes) -> None:
    path = run_dir / "manifest.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def _check_way_out(run_dir, demo_path) -> None:
    """``legcf prepare`` on the directory works, keeps the bad manifest and every other file."""
    bad = (run_dir / "manifest.json").read_bytes()
    others = {k: v for k, v in snapshot(run_dir).items() if k != "manifest.json"}
    result = invoke_ok("prepare", run_dir, "--data", demo_path, "--seed", 7)
    assert MALFORMED_MANIFEST in result.stderr
    assert (run_dir / MALFORMED_MANIFEST).read_bytes() == bad
    after = snapshot(run_dir)
    for name, blob in others.items():  # the data file is rewritten byte-identical
        assert after[name] == blob, name
    manifest = read_manifest(run_dir)
    check_manifest(manifest)
    assert set(manifest["stages"]) == {"prepare"}
    invoke_ok("partition", run_dir, "-c", 10)  # the run goes on from there


@pytest.mark.parametrize(("change", "needle"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_manifest_is_one_line_with_a_way_out(trained_copy, demo_path, change, needle):
    manifest = read_manifest(trained_copy)
    change(manifest)
    _write(trained_copy, json.dumps(manifest))
    before = snapshot(trained_copy)
    for args in (["evaluate", trained_copy], ["inspect", trained_copy], ["export", trained_copy]):
        assert_clean_error(invoke(*args), "manifest.json", needle, "legcf prepare")
        assert snapshot(trained_copy) == before
    _check_way_out(trained_copy, demo_path)


@pytest.mark.parametrize(
    "text",
    [b"", b"{not json", b"\xff\xfe{}", b"[]", b"null", b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000],
    ids=["empty", "not-json", "not-utf8", "list", "null", "100k-brackets", "deep-objects"],
)
def test_unreadable_manifest_is_one_line_with_a_way_out(trained_copy, demo_path, text):
    _write(trained_copy, text)
    before = snapshot(trained_copy)
    assert_clean_error(invoke("evaluate", trained_copy), "manifest.json", "legcf prepare")
    assert snapshot(trained_copy) == before
    _check_way_out(trained_copy, demo_path)


def test_manifest_of_another_tool_is_left_alone(trained_copy, demo_path):
    _write(trained_copy, json.dumps({"format": "other-tool", "stages": []}))
    before = snapshot(trained_copy)
    for args in (["evaluate", trained_copy], ["prepare", trained_copy, "--data", demo_path]):
        assert_clean_error(invoke(*args), "not a legcf run manifest", "new directory")
        assert snapshot(trained_copy) == before


def test_every_manifest_legcf_writes_meets_the_schema(trained_run):
    check_manifest(read_manifest(trained_run))


def test_schema_messages_name_the_field():
    with pytest.raises(ManifestProblem, match=r"^stages\.refine\.kept must be 'pretrain' or 'refine'"):
        check_manifest(
            {
                "format": "legcf-run",
                "format_version": 1,
                "dataset": {"fingerprint": "0" * 64},
                "stages": {
                    "refine": {
                        "inputs": {},
                        "outputs": {},
                        "config": {},
                        "metrics": {"ndcg@20": 0.1},
                        "kept": 3,
                    }
                },
            }
        )
