"""Benchmarks run in their quick modes and write the JSON they promise."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args):
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_paper_table_quick(tmp_path, mnist_dir):
    out = tmp_path / "table.json"
    stdout = run("paper_table.py", "--data-dir", mnist_dir, "--quick", "--presets", "mnist-paper",
                 "--epochs", "1", "--steps-per-epoch", "30", "--runs-dir", str(tmp_path / "runs"),
                 "--out", str(out))
    result = json.load(open(out))
    (r,) = result["runs"]
    assert r["labels_per_class"] == 10 and r["preset"] == "mnist-paper" and 0 <= r["test_error"] <= 1
    assert {"epochs", "wall_time_s", "seed", "config"} <= set(r)
    # the unlabelled training images, scored against their hidden labels: 60,000 less the 100 labelled
    assert r["unlabelled_images"] == 59900 and 0 <= r["pool_error"] <= 1 and " -> " in r["worst_confusion"]
    assert "unlabelled-pool error" in stdout
    (s,) = result["summary"]
    assert s["n_seeds"] == 1 and s["mean_test_error"] == r["test_error"]
    assert "| 10 | 12.2 | 11.97 | 9.71 |" in stdout
    # A finished run is reused as is; one trained under other settings is trained again.
    again = run("paper_table.py", "--data-dir", mnist_dir, "--quick", "--presets", "mnist-paper",
                "--epochs", "1", "--steps-per-epoch", "30", "--runs-dir", str(tmp_path / "runs"),
                "--out", str(out))
    assert "training it again" not in again and json.load(open(out))["runs"][0]["wall_time_s"] == r["wall_time_s"]
    changed = run("paper_table.py", "--data-dir", mnist_dir, "--quick", "--presets", "mnist-paper",
                  "--epochs", "1", "--steps-per-epoch", "20", "--runs-dir", str(tmp_path / "runs"),
                  "--set", "objective.alpha=40", "--out", str(out))
    assert "finished with another configuration; training it again" in changed
    config = json.load(open(out))["runs"][0]["config"]
    assert config["train"]["steps_per_epoch"] == 20 and config["objective"]["alpha"] == 40


def test_throughput_writes_roofline_fields(tmp_path):
    out = tmp_path / "tp.json"
    run("throughput.py", "--out", str(out), "--steps", "2", "--warmup", "1", "--estimators", "plugin")
    rows = json.load(open(out))["results"]
    assert [(r["estimator"], r["xla"]) for r in rows] == [("plugin", True), ("plugin", False)]
    for r in rows:
        for kind in ("step_ms", "roofline_ms"):                           # the median of three rounds
            assert len(r[f"{kind}_rounds"]) == 3 and r[kind] == sorted(r[f"{kind}_rounds"])[1]
        assert r["examples_per_sec"] > 0 and r["roofline_examples_per_sec"] > 0
        assert r["roofline_fraction"] > 0
        assert abs(r["roofline_fraction"] - r["examples_per_sec"] / r["roofline_examples_per_sec"]) < 1e-9
        assert r["labelled_tail"] == 0                                    # mnist-paper: rate mode
    machine = json.load(open(out))["machine"]
    assert machine["cpus"] == os.cpu_count() and isinstance(machine["isa"], list) and machine["tensorflow"]


def test_throughput_counts_the_labelled_tail_once():
    # Labelled examples skip exactly their share of what enumeration adds over plug-in.
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from throughput import step_shapes
    from tfstructvae import get_preset
    from tfstructvae.train import build_model

    def work(model, estimator):
        return sum(m * i * o for m, i, o in step_shapes(model, 100, estimator))
    model = build_model(get_preset("mnist-best"), (28, 28, 1))
    enumerated, plugin = work(model, "enumerate"), work(model, "plugin")
    model.set_labelled_tail(20, ("y",))
    assert abs((enumerated - work(model, "enumerate")) - 0.2 * (enumerated - plugin)) < 1e-3 * enumerated


def test_throughput_counts_top_k_enumeration_and_the_classifier_passes():
    # enumeration_top_k = k: what enumeration adds over plug-in shrinks to (k - 1) / (K - 1) of it;
    # the augmentation and shifted-label terms each add one pass of q(y|x), on B and the label rows
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from throughput import dense_shapes
    from tfstructvae import get_preset
    from tfstructvae.train import build_model

    def work(cfg, estimator, label_rows=0):
        model = build_model(cfg, (28, 28, 1))
        model.set_label_rows(label_rows)
        return sum(m * i * o for m, i, o in dense_shapes(model, 100, estimator))
    best = get_preset("mnist-best")
    enumerated, plugin = work(best, "enumerate"), work(best, "plugin")
    top2 = work(best.override(**{"objective.enumeration_top_k": 2}), "enumerate")
    # ... except the class's own projection (10 -> 512 in q(z|x,y) and in p(x|y,z)): on k*B rows
    # under top_k, on K rows broadcast over the batch without it
    per_row = 2 * 10 * 512
    excess = (2 - 1) * 100 * per_row - (10 - 100) * per_row / 9
    assert abs((top2 - plugin) - (enumerated - plugin) / 9 - excess) < 1e-6 * enumerated
    classifier = 784 * 1200 + 1200 * 600 + 600 * 300 + 300 * 10
    shifted = best.override(**{"objective.augment_weight": 50.0, "objective.augment_labelled": True})
    assert work(shifted, "plugin", label_rows=20) - plugin == classifier * (100 + 20)
    model = build_model(shifted, (28, 28, 1))
    model.set_label_rows(20)
    # VAT's probe on the minibatch, then one pass on the adversarial, shifted and labels' rows stacked
    assert [m for m, i, o in dense_shapes(model, 100, "plugin") if (i, o) == (784, 1200)] == [100, 100, 220]


def test_throughput_reads_enumerate_top_k_as_an_estimator_label():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from throughput import estimator_and_top_k
    assert estimator_and_top_k("enumerate-top3") == ("enumerate", 3)
    assert estimator_and_top_k("plugin") == ("plugin", 0)
    for bad in ("plugin-top2", "enumerate-top0", "enumerate-topx"):
        with pytest.raises(SystemExit, match="enumerate-topK"):
            estimator_and_top_k(bad)


def test_supervision_rate_sweep_endpoints(tmp_path, mnist_dir):
    out = tmp_path / "rate.json"
    stdout = run("supervision_rate.py", "--data-dir", mnist_dir, "--rates", "0,0.5,1.0", "--labels", "10",
                 "--epochs", "1", "--steps-per-epoch", "20", "--runs-dir", str(tmp_path / "runs"),
                 "--out", str(out))
    rows = json.load(open(out))["runs"]
    assert [r["supervision_rate"] for r in rows] == [0.0, 0.5, 1.0]
    assert all(0 <= r["test_error"] <= 1 for r in rows)
    assert os.path.getsize(tmp_path / "rate.png") > 1000 and "| 10 |" in stdout


def test_analogy_benchmark_on_a_tiny_run(tmp_path, mnist_dir):
    from tfstructvae import get_preset
    from tfstructvae.train import train_and_evaluate
    cfg = get_preset("mnist-paper").override(**{"data.data_dir": mnist_dir, "train.epochs": 1,
                                                "train.steps_per_epoch": 30})
    train_and_evaluate(cfg, str(tmp_path / "run"), verbose=0)
    out = tmp_path / "an.json"
    run("analogies.py", str(tmp_path / "run"), "--data-dir", mnist_dir, "--sources", "20",
        "--classifier-epochs", "1", "--out", str(out))
    result = json.load(open(out))
    assert 0 <= result["analogy_accuracy"] <= 1 and len(result["analogy_accuracy_per_class"]) == 10
    assert result["style_consistency"] <= 1 and result["classifier_test_accuracy"] > 0.95


def test_memory_benchmark_quick(tmp_path, mnist_dir):
    out = tmp_path / "mem.json"
    run("memory.py", "--data-dir", mnist_dir, "--epochs", "2", "--steps-per-epoch", "10",
        "--requests", "5000", "--out", str(out))
    result = json.load(open(out))
    assert len(result["training"]["rss_mb_per_epoch"]) == 2 and result["training"]["peak_rss_mb"] > 100
    assert result["serving"]["requests"] == 5000 and result["serving"]["rss_mb_last"] > 0


def test_svhn_benchmark_on_synthetic_official_layout(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_svhn_conv import write_svhn
    data = tmp_path / "svhn"
    data.mkdir()
    write_svhn(data, n_train=200)
    out = tmp_path / "svhn.json"
    stdout = run("svhn.py", "--data-dir", str(data), "--labels", "5", "--epochs", "1", "--steps-per-epoch", "3",
                 "--skip-checksum", "--runs-dir", str(tmp_path / "runs"), "--out", str(out))
    (r,) = json.load(open(out))["runs"]
    assert r["labels_per_class"] == 5 and 0 <= r["test_error"] <= 1 and "| 5 |" in stdout


def test_validation_curve_records_every_epoch_without_the_test_set(tmp_path, mnist_dir):
    out = tmp_path / "val.json"
    stdout = run("validation_curve.py", "--data-dir", mnist_dir, "--preset", "mnist-paper",
                 "--set", "train.epochs=3", "--set", "objective.alpha=500", "--stop-after-epoch", "2",
                 "--steps-per-epoch", "20", "--validation-size", "500", "--out", str(out))
    result = json.load(open(out))
    assert [c["epoch"] for c in result["curve"]] == [1, 2]          # stopped early, schedule of 3
    assert all(0 <= c["validation_error"] <= 1 for c in result["curve"])
    assert result["config"]["objective"]["alpha"] == 500 and result["config"]["data"]["validation_size"] == 500
    assert "validation error" in stdout and "test" not in stdout.lower()


def test_validation_curve_scores_the_unlabelled_pool_on_the_test_tables_split(tmp_path, mnist_dir):
    out = tmp_path / "pool.json"
    stdout = run("validation_curve.py", "--data-dir", mnist_dir, "--preset", "mnist-paper",
                 "--set", "train.epochs=1", "--steps-per-epoch", "20", "--validation-size", "0",
                 "--pool-error", "--out", str(out))
    (point,) = json.load(open(out))["curve"]
    assert 0 <= point["pool_error"] <= 1 and "validation_error" not in point
    true, rest = point["worst_confusion"].split(" -> ")
    assert 0 <= int(true) < 10 and int(rest.split(":")[0]) != int(true)
    assert "unlabelled-pool error" in stdout and "test" not in stdout.lower()
    # without a hold-out and without the pool there is nothing to report: refused, not run
    refused = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "validation_curve.py"),
                              "--data-dir", mnist_dir, "--validation-size", "0", "--out", str(tmp_path / "x.json")],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
    assert refused.returncode == 2 and "--pool-error" in refused.stderr


def test_pool_error_scores_a_finished_runs_unlabelled_images(tmp_path, mnist_dir):
    from tfstructvae import cli
    run_dir = str(tmp_path / "run")
    assert cli.main(["train", "--preset", "mnist-paper", "--data-dir", mnist_dir, "--output-dir", run_dir,
                     "--epochs", "1", "--steps-per-epoch", "5", "--validation-size", "1000",
                     "--label-seed", "3", "--verbose", "0"]) == 0
    out = tmp_path / "pool.json"
    stdout = run("pool_error.py", run_dir, "--out", str(out))
    (r,) = json.load(open(out))["runs"]
    # 60,000 training images less the 1,000 held out and the 100 labelled (label draw 3)
    assert r["unlabelled_images"] == 58900 and r["label_seed"] == 3 and 0 <= r["pool_error"] <= 1
    assert " -> " in r["worst_confusion"] and "unlabelled-pool error" in stdout
    # a run still training has no weights file, only checkpoints: its last one (step 5, where this
    # run ended) is scored on request, to the same figure
    os.remove(os.path.join(run_dir, "model.weights.h5"))
    refused = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "pool_error.py"), run_dir],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
    assert refused.returncode == 2 and "not a finished run" in refused.stderr and "--latest-checkpoint" in refused.stderr
    stdout = run("pool_error.py", run_dir, "--latest-checkpoint", "--out", str(out))
    (c,) = json.load(open(out))["runs"]
    assert c["step"] == 5 and c["pool_error"] == r["pool_error"] and "at step 5:" in stdout


def test_error_and_worst_confusion_names_the_class_read_as_another():
    import numpy as np
    from tfstructvae.train import error_and_worst_confusion
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    read = np.array([0, 1, 1, 1, 1, 1, 1, 1, 2])       # three of the four twos read as ones
    assert error_and_worst_confusion(read, labels, 3) == (4 / 9, "2 -> 1: 3 of 4")


def test_morpho_benchmark_reports_r2_and_controllability(tmp_path, mnist):
    import numpy as np
    data = tmp_path / "small.npz"
    np.savez(data, x_train=mnist.x_train[:1000, ..., 0], y_train=mnist.y_train[:1000],
             x_test=mnist.x_test[:200, ..., 0], y_test=mnist.y_test[:200])
    out = tmp_path / "morpho.json"
    env_cache = {"TFSTRUCTVAE_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "morpho.py"), "--data-dir", str(data),
                             "--seeds", "0", "--labels-per-class", "5", "--epochs", "1", "--steps-per-epoch", "5",
                             "--control-images", "20", "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
                             "--validation-size", "100",
                             "--set", "model.hidden_units=[32]", "--set", "model.classifier_units=[32]"],
                            capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, **env_cache})
    assert result.returncode == 0, result.stderr[-3000:]
    (r,) = json.load(open(out))["runs"]
    assert r["test_r2/slant"] <= 1 and r["test_rmse/thickness"] > 0 and 0 <= r["test_error"] <= 1
    # the hold-out is scored on every held-out image's measures (1% of 1,000 would leave about one)
    assert r["validation_r2/slant"] <= 1 and r["validation_rmse/thickness"] > 0 and 0 <= r["validation_error"] <= 1
    assert "validation: digit error" in result.stdout
    for factor in ("slant", "thickness"):
        c = r["controllability"][factor]
        assert len(c["grid_standardised"]) == 9 and np.all(np.diff(c["grid_standardised"]) > 0)
        assert -1 <= c["spearman_pooled"] <= 1 and np.isfinite(c["other_factor_drift_sd"])
    assert os.path.getsize(r["figure"]) > 0


def test_pairs_benchmark_reports_both_positions(tmp_path, mnist_dir):
    out = tmp_path / "pairs.json"
    run("pairs.py", "--data-dir", mnist_dir, "--labels", "10", "--seeds", "0", "--epochs", "1",
        "--steps-per-epoch", "3", "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--swap-pairs", "20",
        "--set", "model.hidden_units=[16]", "--set", "model.classifier_units=[16]")
    rows = json.load(open(out))["runs"]
    assert [r["kind"] for r in rows] == ["semi-supervised", "supervised"]
    for r in rows:
        assert r["labelled_pairs"] == 100
        assert max(r["test_error/left"], r["test_error/right"]) <= r["test_error/both"] <= 1
    assert os.path.getsize(rows[0]["figure"]) > 0
    assert 0 <= rows[0]["swap_accuracy/right"] <= 1 and 0 <= rows[0]["swap_kept/left"] <= 1
    assert rows[0]["swap_pairs"] == 20
    summary = json.load(open(out))["summary"]
    assert [(c["kind"], c["n_seeds"]) for c in summary] == [("semi-supervised", 1), ("supervised", 1)]
    assert summary[0]["test_error/left"] == {"mean": rows[0]["test_error/left"], "sd": 0.0}


YALEB = os.path.join(REPO, "..", "shared", "data", "yaleb")


def test_yaleb_benchmark_reports_identity_and_lighting(tmp_path):
    import pytest
    if not os.path.isdir(YALEB):
        pytest.skip("the Yale B archive is not beside the checkout")
    out = tmp_path / "yaleb.json"
    run("yaleb.py", "--data-dir", YALEB, "--labels", "5", "--seeds", "0", "--epochs", "1",
        "--steps-per-epoch", "3", "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--no-baseline",
        "--control-faces", "10",
        "--set", "model.hidden_units=[16]", "--set", "model.classifier_units=[16]")
    (r,) = json.load(open(out))["runs"]
    assert r["labelled_faces"] == 190 and 0 <= r["test_error"] <= 1 and r["test_r2/lighting"] <= 1
    assert all(os.path.getsize(f) > 0 for f in r["figures"]) and len(r["figures"]) == 2
    assert 0 <= r["identity_swap_accuracy"] <= 1 and r["lighting_swap_r2"] <= 1 and r["control_faces"] == 10


@pytest.mark.parametrize("steps_a_call", [1, 3])
def test_fit_throughput_compares_the_whole_fit_with_the_step(tmp_path, mnist_dir, steps_a_call):
    # every figure is per step, also where a call of the compiled function runs three
    out = tmp_path / "fit.json"
    stdout = run("fit_throughput.py", "--data-dir", mnist_dir, "--out", str(out), "--estimators", "plugin",
                 "--steps", "6", "--epochs", "2", "--step-repeats", "3", "--preset", "mnist-paper",
                 "--set", "model.hidden_units=[16]", "--set", "data.validation_size=100",
                 "--set", f"train.steps_per_execution={steps_a_call}")
    rows = json.load(open(out))["runs"]
    assert [r["xla"] for r in rows] == [True, False]
    for r in rows:
        assert 0 < r["loop_ms"] <= r["fit_ms"] * 1.5 and r["step_ms"] > 0
        assert r["fit_over_step"] == r["fit_ms"] / r["step_ms"]
        assert len(r["step_ms_rounds"]) == 3 and r["step_ms"] == sorted(r["step_ms_rounds"])[1]   # their median
        assert 0 < r["fit_ms_without_validation"] < r["fit_ms"]       # a validation pass every epoch
        assert r["bare_loop_ms"] > 0 and r["pipeline_ms"] > 0
    assert "fit/step" in stdout


def test_scaling_times_one_and_two_workers_and_the_shards(tmp_path, mnist_dir):
    out = tmp_path / "scaling.json"
    run("scaling.py", "--data-dir", mnist_dir, "--out", str(out), "--preset", "mnist-paper", "--steps", "5",
        "--copies", "2", "--work-dir", str(tmp_path / "work"))
    result = json.load(open(out))
    one, two = result["workers"]["1"], result["workers"]["2"]
    assert one["workers"] == 1 and two["workers"] == 2 and one["global_batch"] == two["global_batch"]
    assert result["workers"]["scaling_efficiency"] == two["examples_per_s"] / (2 * one["examples_per_s"])
    assert all(v > 0 for v in result["streaming"]["pipeline_batches_per_s"].values())
    assert result["streaming"]["train_examples_per_s"]["shards"] > 0
    rss = {kind: {n: v["rss_mb"] for n, v in sizes.items()} for kind, sizes in result["memory_mb"].items()}
    assert set(rss["memory"]) == set(rss["shards"]) == {"60000", "120000"}
    # the in-memory pipeline holds the second copy of 47 MB of images (and TF's copy of it); the shards do not
    assert rss["memory"]["120000"] - rss["memory"]["60000"] > 40
    assert rss["shards"]["120000"] - rss["shards"]["60000"] < rss["memory"]["120000"] - rss["memory"]["60000"]


def test_paper_table_trains_the_draws_side_by_side_with_jobs(tmp_path, mnist_dir):
    out, runs = tmp_path / "table.json", tmp_path / "runs"
    stdout = run("paper_table.py", "--data-dir", mnist_dir, "--presets", "mnist-paper", "--labels", "10",
                 "--seeds", "0,1", "--epochs", "1", "--steps-per-epoch", "10", "--runs-dir", str(runs),
                 "--set", "train.jit_compile=false", "--jobs", "2", "--out", str(out))
    result = json.load(open(out))
    assert result["jobs"] == 2 and [r["seed"] for r in result["runs"]] == [0, 1]
    for seed in (0, 1):     # each draw trained by a process of its own, on one of the two threads
        child = json.load(open(runs / f"paper_table-l10-s{seed}.json"))
        (r,) = child["runs"]
        assert r["seed"] == seed and r["wall_time_s"] == result["runs"][seed]["wall_time_s"]
        assert f"l=10 seed={seed}: training in its own process" in stdout
    assert result["summary"][0]["n_seeds"] == 2


def test_paper_table_jobs_never_exceed_the_runs(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import paper_table
    started = []
    monkeypatch.setattr(paper_table.subprocess, "Popen", lambda *a, **k: started.append(k["env"]) or Done())
    runs = tmp_path / "runs"
    paper_table.train_in_parallel([], [10], [0], 3, str(runs))       # --quick: one run, trained by the caller
    assert started == [] and not runs.exists()
    paper_table.train_in_parallel([], [10], [0, 1], 3, str(runs))    # two runs: two processes on cores/2 threads
    assert [e["TF_NUM_INTRAOP_THREADS"] for e in started] == [str(max(1, (os.cpu_count() or 1) // 2))] * 2


class Done:
    returncode = 0

    def poll(self):
        return 0


def test_compare_peers_times_pyro_and_the_package_on_the_same_model(tmp_path, mnist_dir):
    out = tmp_path / "peers.json"
    stdout = run("compare_peers.py", "--out", str(out), "--steps", "2", "--warmup", "1", "--seconds", "3",
                 "--data-dir", mnist_dir, "--rounds", "2", "--xla", "off", "--steps-per-execution", "2")
    result = json.load(open(out))
    assert result["package"]["steps_per_execution"] == 2                 # two steps a call, each step timed
    for side in ("pyro", "package"):        # each figure the median of its rounds, the sides alternating
        for row in result[side]["timing"].values():
            assert len(row["rounds_step_ms"]) == 2 and row["step_ms"] == sum(row["rounds_step_ms"]) / 2
            assert abs(row["examples_per_sec"] - 100 / (row["step_ms"] / 1e3)) < 1e-6
    assert result["pyro"]["pyro"].startswith("1.") and result["pyro"]["threads"] == 2
    for side in ("pyro", "package"):
        assert 0.0 <= result[side]["accuracy"]["test_error"] <= 1.0 and result[side]["accuracy"]["steps"] > 0
    # `--xla off` fixes the timed training's step too: nothing chosen, no XLA
    assert result["package"]["accuracy"]["xla"] is False and result["package"]["accuracy"]["step_ms_xla_and_not"] == {}
    # `--xla off`: the steps without XLA only (the default times both)
    assert set(result["package"]["timing"]) == {f"{e}_no_xla/{k}" for e in ("enumerate", "plugin")
                                                for k in ("unlabelled", "labelled")}
    ratio = result["ratios_examples_per_sec"]["enumerate_no_xla/unlabelled / pyro"]
    assert ratio == (result["package"]["timing"]["enumerate_no_xla/unlabelled"]["examples_per_sec"]
                     / result["pyro"]["timing"]["unlabelled"]["examples_per_sec"])
    assert "test error after 3 s" in stdout
    # the work each step's products do: Pyro's enumeration runs encoder_z and the decoder on
    # 10 x 100 rows; the package's q(z|x,y) reads x once (networks.py), so it does less
    work = result["matmul_work"]
    pyro_macs = 100 * (784 * 500 + 500 * 10) + 1000 * (794 * 500 + 500 * 100) + 1000 * (60 * 500 + 500 * 784)
    assert abs(work["pyro"]["unlabelled"]["gflop_per_step"] - 6 * pyro_macs / 1e9) < 1e-9
    enumerate_work = work["package"]["enumerate_no_xla/unlabelled"]
    assert 0.4 < enumerate_work["work_against_pyro"] < 0.9
    assert work["package"]["plugin_no_xla/unlabelled"]["gflop_per_step"] < enumerate_work["gflop_per_step"] / 3
    peak = work["peak_gflops"]
    assert peak >= max(result["package"]["peak_gflops"], result["pyro"]["peak_gflops"]) > 0
    ceiling = work["ceiling_ratio_at_peak"]["enumerate_no_xla/unlabelled / pyro"]
    assert ceiling == (result["pyro"]["timing"]["unlabelled"]["step_ms"] / 1e3) / (enumerate_work["gflop_per_step"] / peak)
    # the second ceiling: Pyro's step against the package's products alone at their shapes, which
    # take about what they would at the machine's best rate or more (loose: two timed calls here)
    row = result["package"]["timing"]["enumerate_no_xla/unlabelled"]
    own = work["ceiling_ratio_at_roofline"]["enumerate_no_xla/unlabelled / pyro"]
    assert own == result["pyro"]["timing"]["unlabelled"]["step_ms"] / row["roofline_ms"]
    assert 0 < own <= ceiling * 2
    assert result["machine"]["cpus"] == os.cpu_count()


def test_throughput_growth_curves_trace_each_step_once(tmp_path):
    out, png = tmp_path / "growth.json", tmp_path / "growth.png"
    run("throughput.py", "--out", str(out), "--steps", "2", "--warmup", "1", "--estimators", "plugin",
        "--set", "model.hidden_units=[16]", "--growth", "--classes", "10,20", "--batch-sizes", "16,32",
        "--png", str(png))
    rows = json.load(open(out))["growth"]
    assert len(rows) == 4 * 4
    assert {r["estimator"] for r in rows} == {"plugin", "enumerate", "relaxed", "enumerate-top2"}
    assert {r["top_k"] for r in rows if r["estimator"] == "enumerate-top2"} == {2}
    assert {(r["classes"], r["batch_size"]) for r in rows if r["sweep"] == "classes"} == {(10, 100), (20, 100)}
    assert {(r["classes"], r["batch_size"]) for r in rows if r["sweep"] == "batch_size"} == {(10, 16), (10, 32)}
    assert all(r["traces"] == 1 and r["examples_per_sec"] > 0 for r in rows)
    assert png.stat().st_size > 1000


def test_time_to_error_records_the_first_crossing_of_each_threshold(tmp_path, mnist_dir):
    out = tmp_path / "tte.json"
    stdout = run("time_to_error.py", "--data-dir", mnist_dir, "--out", str(out), "--preset", "mnist-paper",
                 "--set", "train.epochs=2", "--set", "model.hidden_units=[16]", "--steps-per-epoch", "20",
                 "--every", "10", "--thresholds", "0.99,0.0", "--validation-size", "500")
    result = json.load(open(out))
    assert [c["step"] for c in result["curve"]] == [10, 20, 30, 40]        # 0% is never reached: to the end
    assert result["time_to"]["0.99"]["step"] == 10 and result["time_to"]["0.0"] is None
    seconds = [c["train_seconds"] for c in result["curve"]]
    assert all(0 < a < b for a, b in zip(seconds, seconds[1:]))
    assert "0%: not reached" in stdout
    assert result["machine"]["cpus"] == os.cpu_count()


def test_time_to_error_to_the_end_says_when_the_error_stays_below(tmp_path, mnist_dir):
    out = tmp_path / "tte.json"
    stdout = run("time_to_error.py", "--data-dir", mnist_dir, "--out", str(out), "--preset", "mnist-paper",
                 "--set", "train.epochs=2", "--set", "model.hidden_units=[16]", "--steps-per-epoch", "20",
                 "--every", "10", "--thresholds", "1.0,0.0", "--validation-size", "500", "--to-the-end")
    result = json.load(open(out))
    assert [c["step"] for c in result["curve"]] == [10, 20, 30, 40]     # not stopped at the first 100%
    assert result["stays_below"]["1.0"]["step"] == 10 and result["stays_below"]["0.0"] is None
    assert result["final_validation_error"] == result["curve"][-1]["validation_error"]
    assert "stays below from" in stdout


def test_stays_below_is_the_start_of_the_last_run_under_the_threshold():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from time_to_error import stays_below
    curve = [{"step": s, "train_seconds": s / 10, "validation_error": e}
             for s, e in [(1, 0.2), (2, 0.04), (3, 0.06), (4, 0.05), (5, 0.03), (6, 0.04)]]
    assert stays_below(curve, 0.05) == {"step": 4, "train_seconds": 0.4}   # 0.04 at step 2 did not hold
    assert stays_below(curve, 0.035) is None                                # the last point is above
    assert stays_below(curve, 0.5) == {"step": 1, "train_seconds": 0.1}


def test_profile_step_sums_the_trace_per_op(tmp_path):
    out = tmp_path / "profile.json"
    stdout = run("profile_step.py", "--out", str(out), "--preset", "mnist-paper", "--estimator", "plugin",
                 "--steps", "3", "--warmup", "1", "--set", "model.hidden_units=[16]", "--logdir", str(tmp_path / "tb"))
    result = json.load(open(out))
    assert [r["xla"] for r in result["runs"]] == [True, False]
    plain = result["runs"][1]
    types = {r["op"] for r in plain["by_type"]}
    assert types & {"MatMul", "_MklMatMul", "_MklNativeFusedMatMul"}         # the dense layers' products
    assert abs(sum(r["share"] for r in plain["by_type"]) - 1) < 0.2 and plain["op_ms_per_step"] > 0
    assert os.path.isfile(plain["trace"]) and "op time" in stdout
    assert result["runs"][0]["trace"] != plain["trace"] and os.path.isfile(result["runs"][0]["trace"])   # one file a run


def test_leaf_events_count_nested_work_once():
    import sys
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from profile_step import leaf_events, op_type

    class Event:
        def __init__(self, meta, offset, duration):
            self.metadata_id, self.offset_ps, self.duration_ps = meta, offset, duration

    class Line:
        timestamp_ns = 0
        # a wrapper [0, 100) holding ops [10, 40) and [50, 90), a mark at 20 and an op [100, 120) after it
        events = [Event(1, 0, 100), Event(2, 10, 30), Event(9, 20, 0), Event(3, 50, 40), Event(4, 100, 20)]
    assert sorted(m for m, _, _ in leaf_events(Line())) == [2, 3, 4]
    assert op_type("dense/MatMul:_MklMatMul") == "_MklMatMul" and op_type("select_add_fusion.3") == "select_add_fusion"


def test_the_readmes_speed_tables_are_generated_from_the_committed_json(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import tables
    assert {"throughput", "peers", "throughput_pyro_shapes", "time_to_error", "fit"} <= set(tables.TABLES)
    # a table says which machine measured it, when its JSON records one (benchmarks/machine.py)
    assert tables.measured_on({"machine": {"processor": "Some CPU", "isa": ["avx2", "amx_bf16"]}}) == \
        "; Some CPU (avx2, amx_bf16)"
    assert tables.measured_on({"machine": {"cpus": 2, "platform": "Linux"}}) == ""
    stdout = run("tables.py", "--check")                 # the README as committed
    assert "match their JSON" in stdout
    throughput = json.load(open(os.path.join(REPO, "benchmarks", "results", "throughput.json")))
    fastest = max(throughput["results"], key=lambda r: r["examples_per_sec"])
    # a hand-edited figure is caught, and regenerating restores the JSON's
    readme = open(os.path.join(REPO, "README.md")).read()
    figure = f"{fastest['examples_per_sec']:,.0f}"
    assert figure in readme
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace(figure, "99,999"))
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "tables.py"), "--check",
                             "--file", str(stale)], capture_output=True, text=True)
    assert result.returncode == 1 and "differs from its JSON" in result.stderr
    run("tables.py", "--file", str(stale))
    assert stale.read_text() == readme
    unknown = tmp_path / "unknown.md"
    unknown.write_text("<!-- table: speed -->\n<!-- end table -->\n")
    result = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "tables.py"), "--file", str(unknown)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "README names table 'speed'" in result.stderr


def test_the_time_to_error_table_has_a_row_per_run_and_sets_each_draw_against_the_baseline(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import tables

    def result(preset, draw, time_to):
        return {"preset": preset, "thresholds": [0.1, 0.05, 0.03], "every": 250, "time_to": time_to,
                "config": {"objective": {"estimator": "enumerate"},
                           "data": {"validation_size": 5000, "labels_per_class": 10, "label_seed": draw}},
                "curve": [{"step": 250, "train_seconds": 10.0}, {"step": 500, "train_seconds": 20.0}]}

    at = {"0.1": {"step": 250, "train_seconds": 10.0}, "0.05": {"step": 500, "train_seconds": 20.0}}
    runs = {"draws_mnist_shift_seed1.json": result("mnist-shift", 1, {**at, "0.03": {"step": 500, "train_seconds": 30.0}}),
            "draws_mnist_best_seed1.json": result("mnist-best", 1, {**at, "0.03": {"step": 750, "train_seconds": 40.0}}),
            "draws_mnist_best_seed0.json": result("mnist-best", 0, at),
            "draws_mnist_shift_seed0.json": result("mnist-shift", 0, {**at, "0.03": {"step": 500, "train_seconds": 30.0}}),
            "draws_mnist_shift_top2_seed1.json": {**result("mnist-shift", 1, {**at, "0.03": {"step": 750, "train_seconds": 20.0},
                                                                              "0.02": {"step": 1000, "train_seconds": 25.0}}),
                                                  "overrides": ["objective.enumeration_top_k=2"],
                                                  "thresholds": [0.1, 0.05, 0.03, 0.02]},
            "quiet_other.json": result("mnist-mix", 1, {})}           # not one of the draws: left out
    (tmp_path / tables.DRAWS).mkdir()
    for name, r in runs.items():
        (tmp_path / tables.DRAWS / name).write_text(json.dumps(r))
    monkeypatch.setattr(tables, "RESULTS", str(tmp_path))
    rows = [r for r in tables.time_to_error_table().splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert rows == [
        "| 0 | `mnist-best` | 40.0 ms | 10 s (step 250) | 20 s (step 500) | not reached | not reached |",
        "| 0 | `mnist-shift` | 60.0 ms | 10 s (step 250) | 20 s (step 500) | 30 s (step 500) | `mnist-best` does not reach it |",
        "| 1 | `mnist-best` | 53.3 ms | 10 s (step 250) | 20 s (step 500) | 40 s (step 750) | 1 |",
        "| 1 | `mnist-shift` | 60.0 ms | 10 s (step 250) | 20 s (step 500) | 30 s (step 500) | **0.75** |",
        # the baseline's thresholds; the step's cost up to the last of them
        "| 1 | `mnist-shift` + `objective.enumeration_top_k=2` | 26.7 ms | 10 s (step 250) | 20 s (step 500) "
        "| 20 s (step 750) | **0.50** |"]


def test_pixel_density_times_both_densities(tmp_path):
    out = tmp_path / "pd.json"
    run("pixel_density.py", "--out", str(out), "--estimators", "plugin", "--blocks", "1", "--per-block", "2")
    rows = json.load(open(out))["results"]
    assert [(r["estimator"], r["xla"]) for r in rows] == [("plugin", True), ("plugin", False)]
    for r in rows:
        assert r["step_ms_package"] > 0 and r["step_ms_tfp"] > 0
        assert abs(r["speedup"] - r["step_ms_tfp"] / r["step_ms_package"]) < 1e-9


def test_step_costs_times_the_step_against_itself_with_parts_taken_away(tmp_path):
    out = tmp_path / "costs.json"
    stdout = run("step_costs.py", "--out", str(out), "--steps", "2", "--rounds", "2",
                 "--set", "model.hidden_units=[16]", "--set", "model.activation=softplus")
    result = json.load(open(out))
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["as configured", "ReLU activations", "SGD in place of Adam",
                          "products alone, side by side (the roofline)", "products alone, one after another"]
    assert rows["as configured"]["against_the_step"] == 1.0
    for r in rows.values():
        assert len(r["rounds_ms"]) == 2 and r["ms"] == sum(r["rounds_ms"]) / 2 > 0
    # the enumerated step's products at hidden 16: encoders on 100 rows, the decoder on 10 x 100
    assert result["matmul_gflop_per_step"] > 0 and result["estimator"] == "enumerate"
    assert "of the step" in stdout
    assert result["machine"]["cpus"] == os.cpu_count()


def test_machine_names_the_cpu_and_the_instruction_sets_that_decide_the_products(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from machine import cpu_info
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu avx2 fma avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu avx2 fma avx512f amx_bf16 amx_tile\n")
    assert cpu_info(str(fake)) == ("Some CPU @ 2.0GHz", ["avx2", "fma", "avx512f", "amx_bf16", "amx_tile"])
    fake.write_text("processor\t: 0\nmodel name\t: Old CPU\nflags\t\t: fpu sse4_2 avx\n")
    assert cpu_info(str(fake)) == ("Old CPU", [])
