"""`tribit bench -m MODEL | --layout NAME`: runs and prints valid JSON/markdown (no timings)."""

import json

import pytest

from tiny_models import tiny_model
from tribit.bench import model as bm
from tribit.cli.main import main

KEYS = {
    "test",
    "threads",
    "tokens_per_s",
    "min",
    "max",
    "gbps",
    "ratio",
    "model",
    "qtype",
    "isa",
    "commit",
    "peak_rss",
    "bytes_per_token",
    "bw_gbps",
    "cpu",
    "version",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.gguf"
    return tiny_model(path, n_embd=256, n_ff=512, n_layer=2, n_vocab=300)


def test_bench_json(tiny, capsys):
    argv = ["bench", "-m", str(tiny), "-p", "8,16", "-n", "4", "-t", "1,2", "-r", "2", "--json"]
    assert main(argv) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [(r["test"], r["threads"]) for r in recs] == [
        ("pp8", 1),
        ("pp8", 2),
        ("pp16", 1),
        ("pp16", 2),
        ("tg4", 1),
        ("tg4", 2),
    ]
    for r in recs:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["reps"] == 2 and r["qtype"] == "TQ2_0"
        assert 0 < r["min"] <= r["tokens_per_s"] <= r["max"]
        assert r["peak_rss"] > 0 and r["bw_gbps"] > 0
        if r["test"].startswith("tg"):
            assert r["gbps"] > 0 and r["ratio"] > 0 and r["n_gen"] == 4
        else:
            assert r["gbps"] is None and r["ratio"] is None
    # tied head: the weights read per token are the projections plus the embedding matrix
    assert recs[0]["bytes_per_token"] > 300 * 256 * 4


def test_bench_depth(tiny, capsys):
    """-d: every test also runs after N tokens in the cache (llama-bench's depth)."""
    argv = [
        "bench",
        "-m",
        str(tiny),
        "-p",
        "8",
        "-n",
        "4",
        "-d",
        "0,40",
        "-t",
        "1",
        "-r",
        "1",
        "--json",
        "--no-probe",
    ]
    assert main(argv) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [(r["test"], r["n_depth"]) for r in recs] == [
        ("pp8", 0),
        ("pp8 @ d40", 40),
        ("tg4", 0),
        ("tg4 @ d40", 40),
    ]
    tg0, tg40 = recs[2], recs[3]
    # 2 layers x K and V x n_head_kv * head_dim x 2 bytes (f16 cache) x mean positions read
    c = bm._Runner(tiny, 1, 64, None, 0).model.config
    per_pos = c.n_layer * 2 * c.n_head_kv * c.head_dim * 2
    assert tg0["kv_bytes_per_token"] == per_pos * 2.5
    assert tg40["kv_bytes_per_token"] == per_pos * 42.5
    assert recs[0]["kv_bytes_per_token"] is None
    with pytest.raises(ValueError, match="depths must be >= 0"):
        bm.bench_model(tiny, depths=[-1], reps=1, probe=False)


def test_bench_markdown_and_reps_alias(tiny, capsys):
    assert (
        main(
            [
                "bench",
                "-m",
                str(tiny),
                "-p",
                "8",
                "-n",
                "0",
                "--reps",
                "1",
                "--md",
                "--no-probe",
                "-t",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| model |" in out and "| pp8 |" in out and "tg" not in out.split("| model |")[1]


def test_bench_profile(tiny, capsys):
    """--profile: each test's time per op (Model.profile), the rest shown as 'python'."""
    assert (
        main(
            [
                "bench",
                "-m",
                str(tiny),
                "-p",
                "8",
                "-n",
                "3",
                "-r",
                "2",
                "--no-probe",
                "-t",
                "1",
                "--profile",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.split("share of each test's median time per op:")[1]
    lines = out.strip().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["pp8 t1", "tg3 t1"]
    for ln in lines:
        assert "matmul_gate_up" in ln and "python" in ln
    recs = bm.bench_model(tiny, prompts=[8], gens=[3], reps=2, probe=False)
    for r in recs:
        ops = r["op_seconds"]
        assert {"matmul_qkv", "attention", "head", "norm"} <= set(ops)
        assert all(v >= 0 for v in ops.values())
        assert 0 < sum(ops.values()) <= r["median_s"] * 1.5  # medians of parts, roughly the whole


def test_bench_bad_input(tiny, tmp_path, capsys):
    assert main(["bench", "-m", str(tmp_path / "missing.gguf")]) == 1
    assert "model file not found" in capsys.readouterr().err
    assert main(["bench", "-m", str(tiny), "-p", "0", "-n", "0"]) == 1
    assert "nothing to run" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # -m and --layout exclude each other
        main(["bench", "-m", str(tiny), "--layout", "125M"])


def test_bench_layout_is_cached(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TRIBIT_CACHE", str(tmp_path))
    argv = [
        "bench",
        "--layout",
        "125M",
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--json",
        "--no-probe",
    ]
    assert main(argv) == 0
    recs = json.loads(capsys.readouterr().out)
    assert recs[0]["model"] == "dummy-125M" and recs[1]["test"] == "tg2"
    files = list((tmp_path / "dummy").glob("*.gguf"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    assert bm.ensure_dummy("125M") == files[0]  # second use: the cached file
    assert files[0].stat().st_mtime_ns == mtime
