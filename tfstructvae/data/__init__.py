"""Data: readers, where data is found, the labelled split and supervision pipelines."""

from tfstructvae.data.formats import DataError, ImageDataset, load_idx_dir, load_npz, load_tfds, read_idx
from tfstructvae.data.records import ShardedImages, load_shards, write_dataset, write_shards
from tfstructvae.data.pipeline import epoch_steps, evaluation_pipeline, training_pipeline
from tfstructvae.data.sources import ENV_VAR, IMAGE_SHAPES, load_dataset
from tfstructvae.data.split import LabelledSplit, labelled_split

__all__ = ["DataError", "ENV_VAR", "IMAGE_SHAPES", "ImageDataset", "LabelledSplit", "ShardedImages", "epoch_steps", "evaluation_pipeline",
           "labelled_split", "load_dataset", "load_idx_dir", "load_npz", "load_shards", "load_tfds", "read_idx",
           "training_pipeline", "write_dataset", "write_shards"]
