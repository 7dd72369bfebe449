"""epwa.dask.detect_corpus on a 2-worker LocalCluster (loopback): results byte for byte those of
`epwa detect --jsonl` on the same inputs, resume and refusal of another job's folder, a worker
killed mid-run with every document still scored exactly once, and the CLI wrapper's errors."""

import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import threading
import time

import epwa
import pytest

pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

import epwa.corpus  # noqa: E402
import epwa.dask as ed  # noqa: E402
from conftest import BINARY, KEY, cli  # noqa: E402


def bounded(fn, timeout=120):
    """fn() in a thread, failing the test instead of hanging when it does not return in time."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"did not finish in {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def cluster():
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=":0")


@pytest.fixture(scope="module")
def client():
    with cluster() as c, Client(c) as cl:
        yield cl


@pytest.fixture(scope="module")
def model_path(model):
    # The build's GGUF (mapped, shared by the workers), else the bundled model's folder.
    gguf = pathlib.Path(BINARY).parent / "models" / "epwa-tiny-moe.gguf"
    return str(gguf) if gguf.exists() else str(model.path)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "keys.json"
    path.write_text(json.dumps({"default": "k1", "keys": {"k1": KEY, "k2": "another key"}}))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def corpus(model, config, tmp_path_factory):
    """Two JSON-lines files (watermarked and plain generations, ids, token ids, lines that fail)
    and two text files."""
    d = tmp_path_factory.mktemp("corpus")
    gens = [model.generate("The river", max_new_tokens=40, temperature=0.9, seed=s,
                           watermark=config if s % 2 else None) for s in range(16)]
    a = [json.dumps({"id": f"a{s}", "text": g.text, "prompt": "The river"})
         for s, g in enumerate(gens[:10])]
    a += ["a line of plain text about nothing", "{not json", "[1, 2]", "",
          json.dumps({"id": 7, "tokens": gens[3].tokens, "prompt_tokens": gens[3].prompt_tokens})]
    b = [json.dumps({"id": f"b{s}", "text": g.text}) for s, g in enumerate(gens[10:])]
    b.append(json.dumps({"id": "b-none", "prompt": "x"}))
    (d / "a.jsonl").write_text("\n".join(a) + "\n")
    (d / "b.jsonl").write_text("\n".join(b))  # no final newline
    (d / "texts").mkdir()
    (d / "texts" / "one.txt").write_text(gens[1].text)
    (d / "texts" / "two.txt").write_text(gens[2].text)
    return d


def cli_jsonl(path, model_path):
    _, out, _ = cli("detect", "--key", KEY, "--model", model_path, "--load", "auto", "--jsonl",
                    str(path), "-q", check=False)
    return out


def part_files(out_dir):
    m = json.loads((out_dir / "manifest.json").read_text())
    return [(p, (out_dir / p["results"]).read_text()) for p in m["partitions"]]


def test_results_equal_cli_jsonl(client, corpus, model_path, keyring, tmp_path):
    out = tmp_path / "out"
    s = bounded(lambda: ed.detect_corpus([corpus / "a.jsonl", corpus / "b.jsonl", corpus / "texts"],
                                         model_path, keyring, "full", out, partition_size=4,
                                         client=client))
    parts = part_files(out)
    by_input = {}
    for p, text in parts:
        key = p["path"] if p["kind"] == "jsonl" else "texts"
        by_input[key] = by_input.get(key, "") + text
    for name in ("a.jsonl", "b.jsonl"):
        assert by_input[str(corpus / name)] == cli_jsonl(corpus / name, model_path)
    # A text file is scored as a line {"id": its path, "text": its content}.
    texts = [corpus / "texts" / n for n in ("one.txt", "two.txt")]
    lines = [json.dumps({"id": str(t), "text": t.read_text()}) for t in texts]
    want = "".join(cli_jsonl(_write(tmp_path / f"t{i}.jsonl", line), model_path)
                   for i, line in enumerate(lines))
    assert by_input["texts"] == want
    results = list(epwa.corpus.results(out))
    assert s["documents"] == len(results) == 15 + 7 + 2
    assert s["errors"] == sum("error" in r for r in results) == 4
    assert s["detected"] == sum(r.get("detected", False) for r in results) > 0
    assert s["tokens"] == sum(r.get("text_tokens", 0) for r in results)
    assert s["partitions_run"] == s["partitions"] == len(parts) and s["partitions_skipped"] == 0
    assert json.loads((out / "summary.json").read_text()) == s


def _write(path, line):
    path.write_text(line + "\n")
    return path


def test_resume_and_refusals(client, corpus, model_path, keyring, tmp_path):
    out = tmp_path / "out"
    run = lambda key=keyring, **kw: bounded(lambda: ed.detect_corpus(  # noqa: E731
        corpus / "a.jsonl", model_path, key, "cspv", out, partition_size=3, client=client, **kw))
    run()
    before = part_files(out)
    # As after a crash: one partition without results, a half-written temporary file.
    (out / before[2][0]["results"]).unlink()
    (out / "parts" / ".tmp-crashed").write_text("{\"half")
    s = run()
    assert (s["partitions_run"], s["partitions_skipped"]) == (1, len(before) - 1)
    assert part_files(out) == before
    assert sorted(os.listdir(out / "parts")) == sorted(p["results"][6:] for p, _ in before)
    assert run()["partitions_run"] == 0
    with pytest.raises(epwa.Error, match="holds another job .its key differs"):
        run(key_id="k2")
    with pytest.raises(epwa.Error, match="holds another job .its partition_size differs"):
        bounded(lambda: ed.detect_corpus(corpus / "a.jsonl", model_path, keyring, "cspv", out,
                                         client=client))
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(epwa.Error, match="not empty and has no manifest"):
        ed.detect_corpus(corpus / "a.jsonl", model_path, keyring, "full", other, client=client)
    assert (other / "mine.txt").read_text() == "keep me"
    with pytest.raises(epwa.Error, match="input '.*nope.jsonl' not found"):
        ed.detect_corpus(corpus / "nope.jsonl", model_path, keyring, "full", tmp_path / "n")
    with pytest.raises(epwa.Error, match="unknown method 'fast'"):
        ed.detect_corpus(corpus / "a.jsonl", model_path, keyring, "fast", tmp_path / "n")


def test_killed_worker_loses_and_duplicates_nothing(model, config, model_path, tmp_path):
    # About 80 tokens each, so that the job lasts long enough (~1 s here) to be killed mid-run.
    lines = [json.dumps({"id": i, "text": " ".join(
        f"Document {i}, part {k}: the river runs past the old mill and the town of number {i}."
        for k in range(4))}) for i in range(80)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with cluster() as c, Client(c) as cl:
        pids = cl.run(os.getpid)
        job = {}

        def run():
            try:
                job["s"] = ed.detect_corpus(tmp_path / "in.jsonl", model_path, config, "full", out,
                                            partition_size=2, client=cl)
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                job["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "parts").exists() and len(os.listdir(out / "parts")) >= 3:
                break
            time.sleep(0.02)
        busy = [w for w, keys in cl.processing().items() if keys] or list(pids)
        os.kill(pids[busy[0]], signal.SIGKILL)  # mid-run: some partitions done, most not
        assert len(os.listdir(out / "parts")) < 40
        t.join(120)
        assert not t.is_alive(), "the job did not finish after a worker was killed"
        assert "s" in job, f"the job failed: {job.get('error')!r}"
        assert pids[busy[0]] not in cl.run(os.getpid).values()  # the nanny started another
    done = len(os.listdir(out / "parts"))  # the killed task's temporary file removed too
    assert done == 40 and job["s"]["partitions_run"] == 40
    ids = [r["id"] for r in epwa.corpus.results(out)]
    assert sorted(ids) == list(range(80))  # every document, each exactly once
    det = epwa.Detector(model, config)
    for r, line in zip(epwa.corpus.results(out), lines):
        assert r["z"] == det.detect(json.loads(line)["text"]).z_score


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "epwa.dask", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_wrapper(corpus, model_path, keyring, tmp_path):
    out = tmp_path / "out"
    p = run_module(corpus / "b.jsonl", "-o", out, "--model", model_path, "--keyring", keyring,
                   "--workers", "1", "--json", "-q")
    assert p.returncode == 2, p.stderr  # b-none fails, as epwa detect --jsonl exits
    assert json.loads(p.stdout)["documents"] == 7
    assert "".join(t for _, t in part_files(out)) == cli_jsonl(corpus / "b.jsonl", model_path)
    for args, message in [
        (["--keyring", tmp_path / "none.json"], "keyring .* not found"),
        (["--keyring", keyring, "--key-id", "k9"], "has no key 'k9'"),
        (["--keyring", keyring, "--partition-size", "0"], "partition_size must be"),
        (["--key-file", keyring, "--key-id", "k1"], "--key-id names a key of a keyring"),
    ]:
        p = run_module(corpus / "b.jsonl", "-o", tmp_path / "x", "--model", model_path, *args)
        last = p.stderr.strip().splitlines()[-1]
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert last.startswith("epwa: error: "), p.stderr
        assert re.search(message, last), last
    # A model the workers cannot load: its error, and no folder left behind to block a re-run.
    (tmp_path / "model.txt").write_text("not a model")
    p = run_module(corpus / "b.jsonl", "-o", tmp_path / "y", "--model", tmp_path / "model.txt",
                   "--keyring", keyring, "--workers", "1")
    assert p.returncode == 2 and "epwa: error: unrecognised model path" in p.stderr, p.stderr
    assert not (tmp_path / "y").exists()
    p = run_module(corpus / "b.jsonl", "-o", out, "--model", model_path, "--keyring", keyring,
                   "--key-id", "k2")
    assert p.returncode == 2 and "holds another job" in p.stderr


def test_cluster_of_dask_commands(corpus, model_path, keyring, tmp_path):
    """A scheduler and workers started as on several hosts (`dask scheduler`, `dask worker`), on
    loopback; the wrapper joins with --scheduler and gives the same results."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                               "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             str(sched_file), "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout="60s") as cl:
            cl.wait_for_workers(2, timeout=60)
        out = tmp_path / "out"
        p = run_module(corpus / "a.jsonl", "-o", out, "--model", model_path, "--keyring", keyring,
                       "--scheduler", address, "--partition-size", "4", "--json")
        assert p.returncode == 2 and json.loads(p.stdout)["errors"] == 3, p.stderr
        assert "".join(t for _, t in part_files(out)) == cli_jsonl(corpus / "a.jsonl", model_path)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_workers_share_the_gguf_pages(client, model_path, config):
    """The plugin leaves a GGUF's weights in its file mapping: the two workers' resident pages of
    the file are, for the most part, shared ones."""
    if not model_path.endswith(".gguf"):
        pytest.skip("the build's GGUF copy of the bundled model is not there")
    from epwa._corpus_worker import DetectorPlugin

    def mapped_kb(path=os.path.realpath(model_path)):  # smaps names the file, not a link
        kb, inside = {}, False
        with open("/proc/self/smaps") as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    inside = line.rstrip().endswith(path)
                elif inside and line.split(":")[0] in ("Rss", "Shared_Clean"):
                    kb[line.split(":")[0]] = kb.get(line.split(":")[0], 0) + int(line.split()[1])
        return kb

    client.register_worker_plugin(DetectorPlugin("share-test", model_path, "auto", config, "full",
                                                 None, 4.0, False, None, False), name="share-test")
    try:
        z = client.run(lambda: __import__("distributed").get_worker().plugins["share-test"]
                       .detector.detect("The river runs past the mill.").z_score)
        assert len(z) == 2
        for kb in client.run(mapped_kb).values():
            # Weights read from the mapping (a copy to huge pages leaves ~0.2 MB of it resident),
            # and shared (pages only one worker touched, in this or an earlier job, are not).
            assert kb["Rss"] > 8 * 1024 and kb["Shared_Clean"] >= 0.8 * kb["Rss"], kb
    finally:
        client.unregister_worker_plugin("share-test")
    # Unregistered (as at the end of a job), the plugin frees the model: nothing stays mapped.
    assert all(kb == {} for kb in client.run(mapped_kb).values())


def test_numbers_written_as_the_command_writes_them(model_path, tmp_path):
    """Doubles (and other JSON) in result lines as nlohmann::json writes them: its digits differ
    from Python's repr for about 1 double in 150. The command echoes each line's "id"."""
    rng = random.Random(5)
    ids = ["1e15", "1e16", "0.0001", "0.00001", "-0.0", "5e-324", "1.7976931348623157e308",
           "959926189324977.7", "-1.8680214772830281e-07", "18446744073709551616", "-12",
           '"a\\u0001\\"\\\\/\\u007f\\u00e9\\ud83d\\ude00"', '{"b": [1.0, 2.5e-8, null, true], "a": {}}']
    ids += [repr(rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300)) for _ in range(400)]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join('{"id": %s}\n' % i for i in ids))
    want = cli_jsonl(path, model_path).splitlines()
    from epwa import _jsonl
    got = [_jsonl.dumps({"error": 'line has neither "tokens" nor "text"', "line": n,
                         "id": _jsonl.parse_line(f'{{"id": {i}}}'.encode())["id"]})
           for n, i in enumerate(ids, 1)]
    assert got == want
