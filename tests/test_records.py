"""Datasets in TFRecord shards: written, read on demand, the same minibatches as in memory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfstructvae.cli import main
from tfstructvae.config import DataConfig
from tfstructvae.data import (DataError, ShardedImages, labelled_split, load_dataset, load_shards,
                              training_pipeline, write_dataset)


@pytest.fixture(scope="module")
def mnist_shards(mnist, tmp_path_factory):
    return load_shards(write_dataset(mnist, str(tmp_path_factory.mktemp("shards") / "mnist"), num_shards=4))


def test_shards_hold_the_images_and_labels_they_were_given(mnist, mnist_shards):
    assert isinstance(mnist_shards.x_train, ShardedImages) and len(mnist_shards.x_train.files) == 4
    assert mnist_shards.x_train.shape == mnist.x_train.shape and mnist_shards.x_test.shape == mnist.x_test.shape
    rows = np.random.default_rng(0).integers(0, 60000, 500)
    assert np.array_equal(mnist_shards.x_train[rows], mnist.x_train[rows])
    assert np.array_equal(mnist_shards.x_train[14999:15001], mnist.x_train[14999:15001])   # across a shard edge
    assert np.array_equal(mnist_shards.x_test[7], mnist.x_test[7])
    assert np.array_equal(mnist_shards.y_train, mnist.y_train) and mnist_shards.num_classes == 10
    view = mnist_shards.x_train.subset(rows[:50]).subset(np.arange(10, 20))
    assert np.array_equal(view[:], mnist.x_train[rows[10:20]])
    # any TFRecord reader streams them: a record is the image's bytes, then its class as int64
    first = next(iter(tf.data.TFRecordDataset(mnist_shards.x_train.files[1]))).numpy()
    assert first[:784] == mnist.x_train[15000].tobytes()
    assert int(np.frombuffer(first[784:], "<i8")[0]) == mnist.y_train[15000]


@pytest.mark.parametrize("mode", ["rate", "share"])
def test_sharded_pipeline_yields_the_in_memory_minibatches_from_any_step(mnist, mnist_shards, mode):
    cfg = DataConfig(batch_size=50, supervision_mode=mode, supervision_rate=0.3, labelled_share=0.2, data_seed=4)
    split = labelled_split(mnist.y_train, 10, 10, seed=2, validation_size=1000)

    def batches(x, start, n=25):
        ds, _ = training_pipeline(x(split.unlabelled), x(split.labelled), mnist.y_train[split.labelled], cfg,
                                  start_step=start)
        return [(b.numpy(), y.numpy()) for b, y in ds.take(n)]

    for start in (0, 137):
        memory = batches(lambda i: mnist.x_train[i], start)
        streamed = batches(mnist_shards.x_train.subset, start)
        for (xm, ym), (xs, ys) in zip(memory, streamed):
            assert np.array_equal(xm, xs) and np.array_equal(ym, ys)
        assert any((y >= 0).any() for _, y in memory)      # labelled examples among them


def test_a_truncated_or_missing_shard_is_named(mnist_shards, tmp_path, mnist):
    out = write_dataset(mnist.__class__(mnist.name, mnist.x_train[:100], mnist.y_train[:100], mnist.x_test[:40],
                                        mnist.y_test[:40], 10, "small"), str(tmp_path / "small"), num_shards=2)
    shard = os.path.join(out, "train-00001-of-00002.tfrecord")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 10)
    with pytest.raises(DataError, match="train-00001-of-00002.tfrecord.*truncated or corrupt"):
        load_shards(out)
    os.remove(shard)
    with pytest.raises(DataError, match="train-00001-of-00002.tfrecord: missing shard"):
        load_dataset("mnist", out)
    with open(os.path.join(out, "shards.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DataError, match="shards.json: cannot be read"):
        load_shards(out)


def test_prepare_data_then_train_reads_the_shards(tmp_path, fake_mnist_dir, capsys):
    out = str(tmp_path / "shards")
    assert main(["prepare-data", "--dataset", "mnist", "--data-dir", str(fake_mnist_dir), "--out", out,
                 "--shards", "3"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["train_examples"] == 60 and written["test_examples"] == 20 and written["shards"] == 3
    run = str(tmp_path / "run")
    result = subprocess.run([sys.executable, "-m", "tfstructvae.cli", "train", "--preset", "mnist-paper",
                             "--data-dir", out, "--labels-per-class", "2", "--validation-size", "0",
                             "--epochs", "1", "--steps-per-epoch", "5", "--batch-size", "10", "--output-dir", run,
                             "--verbose", "0"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert 0.0 <= metrics["test_error"] <= 1.0 and metrics["labelled_examples"] == 20
    assert main(["prepare-data", "--data-dir", str(fake_mnist_dir), "--out", str(tmp_path / "x"),
                 "--shards", "0"]) == 2


def test_prepare_data_streams_a_tfds_dataset(tmp_path, capsys):
    with tfds.testing.mock_data(num_examples=30):
        assert main(["prepare-data", "--dataset", "mnist", "--source", "tfds", "--out", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    data = load_shards(str(tmp_path / "t"))
    assert data.x_train.shape == (30, 28, 28, 1) and data.y_train.max() < 10
    assert data.x_train[:].dtype == np.uint8
