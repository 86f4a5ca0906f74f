"""Command line: `tfstructvae train | evaluate`. Thin: the logic lives in train.py."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named configuration (default: mnist-shift)")
    p.add_argument("--config", help="a configuration file instead of a preset: a run's config.json or the "
                   "best_config.json `tfstructvae tune` writes (the options below still override it)")
    p.add_argument("--data-dir", help="directory with the dataset's IDX or .npz files "
                   "(default: $TFSTRUCTVAE_DATA_DIR, known places, then a prepared TFDS copy)")
    p.add_argument("--output-dir", required=True, help="run directory to create")
    p.add_argument("--skip-checksum", action="store_true",
                   help="SVHN: do not check the .mat files against the official md5 sums")
    p.add_argument("--labels-per-class", type=int)
    p.add_argument("--validation-size", type=int,
                   help="examples held out of training to report a validation error (presets: 5000; 0: none)")
    p.add_argument("--supervision-mode", choices=("rate", "share"))
    p.add_argument("--supervision-rate", type=float, help="fraction of minibatches that are labelled")
    p.add_argument("--labelled-share", type=float, help="fraction of each minibatch that is labelled")
    p.add_argument("--estimator", help="plugin | enumerate | relaxed (the default of discrete nodes)")
    p.add_argument("--alpha", type=float, help="classifier weight per labelled example")
    p.add_argument("--style-dim", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--seed", type=int, help="sets the label, data and init seeds at once")
    p.add_argument("--label-seed", type=int)
    p.add_argument("--data-seed", type=int)
    p.add_argument("--init-seed", type=int)
    p.add_argument("--no-xla", action="store_true", help="do not compile the step with XLA "
                   "(default: timed both ways on the first steps, the faster kept)")
    p.add_argument("--distribute", choices=("none", "mirrored", "multiworker"),
                   help="none (default); mirrored: every local GPU; multiworker: the cluster in TF_CONFIG")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any configuration field, e.g. --set objective.entropy_weight=0.5")
    p.add_argument("--teacher", action="append", metavar="RUN_DIR",
                   help="self-training: a finished run on the same labelled split whose classifier labels the "
                        "unlabelled images (repeat for several, averaged); see data.teacher_threshold")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    p.add_argument("--verbose", default="auto", help="Keras verbosity: auto, 0, 1 (bar), 2 (line/epoch)")
    p.add_argument("--metrics", help="comma-separated figures the progress bar shows, or 'all' "
                   "(default: loss,elbo,val_accuracy); every figure goes to TensorBoard and history.csv")


def config_from_args(args):
    from tfstructvae.config import DEFAULT_PRESET, Config, ConfigError, get_preset, parse_overrides
    if args.config and args.preset:
        raise ConfigError("give --preset or --config, not both")
    if args.config:
        with open(args.config) as f:
            try:
                cfg = Config.from_dict(json.load(f))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{args.config} is not a JSON configuration: {e}") from None
    else:
        cfg = get_preset(args.preset or DEFAULT_PRESET)
    seeds = {f"{s}": args.seed for s in ("data.label_seed", "data.data_seed", "train.init_seed")}
    changes = {
        **seeds,
        "data.data_dir": args.data_dir,
        "data.labels_per_class": args.labels_per_class,
        "data.validation_size": args.validation_size,
        "data.supervision_mode": args.supervision_mode,
        "data.supervision_rate": args.supervision_rate,
        "data.labelled_share": args.labelled_share,
        "data.batch_size": args.batch_size,
        "data.label_seed": args.label_seed if args.label_seed is not None else seeds["data.label_seed"],
        "data.data_seed": args.data_seed if args.data_seed is not None else seeds["data.data_seed"],
        "train.init_seed": args.init_seed if args.init_seed is not None else seeds["train.init_seed"],
        "objective.estimator": args.estimator,
        "objective.alpha": args.alpha,
        "model.style_dim": args.style_dim,
        "train.epochs": args.epochs,
        "train.learning_rate": args.learning_rate,
        "train.steps_per_epoch": args.steps_per_epoch,
        "train.jit_compile": False if args.no_xla else None,
        "train.distribute": args.distribute,
        "data.verify_checksum": False if args.skip_checksum else None,
        # absolute, so that a resume or a student's config read from another directory finds them
        "data.teacher": tuple(os.path.abspath(t) for t in args.teacher) if args.teacher else None,
        "train.progress_metrics": tuple(args.metrics.split(",")) if args.metrics else None,
    }
    changes.update(parse_overrides(args.set))
    return cfg.override(**changes).validate()


def export_run(run_dir: str, out_dir: str) -> dict:
    import os
    import shutil
    from tfstructvae.export import describe, export_saved_model
    from tfstructvae.rundir import RunDirError, load_run
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise RunDirError(f"{out_dir} exists and is {'a file' if os.path.isfile(out_dir) else 'not empty'}; "
                          "choose a new directory")
    cfg, model = load_run(run_dir)
    diffs = export_saved_model(model, out_dir, config_json=cfg.to_json())
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        shutil.copy(os.path.join(run_dir, "metrics.json"), out_dir)
    print(describe(out_dir))
    return {"saved_model": out_dir, "reload_max_abs_diff": max(diffs.values())}


def draw(args) -> dict:
    import numpy as np
    from tfstructvae import visualize
    codec = visualize.Codec(args.model, node=args.node, style=args.style)
    if args.command == "style-grid":
        image = visualize.style_figure(codec, steps=args.steps)
    else:
        import os
        from tfstructvae.config import Config
        from tfstructvae.data import load_dataset
        cfg_path = os.path.join(args.model, "config.json")   # runs and exports both carry it
        cfg = Config.from_dict(json.load(open(cfg_path))) if os.path.isfile(cfg_path) else Config()
        data = load_dataset(cfg.data.dataset, args.data_dir or cfg.data.data_dir,
                            verify_checksum=cfg.data.verify_checksum)
        # one source image of each class first, then the next test images
        first = [int(np.flatnonzero(data.y_test == k)[0]) for k in range(codec.num_classes)]
        idx = (first + [i for i in range(len(data.y_test)) if i not in first])[:args.count]
        image = visualize.analogy_figure(codec, data.x_test[idx].astype(np.float32) / 255.0)
    return {"png": visualize.save_png(image, args.out), "shape": list(image.shape)}


def prepare_data(args) -> dict:
    from tfstructvae.data import DataError, load_dataset, load_shards, write_dataset
    from tfstructvae.data.records import write_tfds
    if args.shards < 1:
        raise DataError(f"--shards must be >= 1, got {args.shards}")

    def progress(split, done, total):
        print(f"\r{split}: {done}/{total} examples written", end="\n" if done == total else "",
              file=sys.stderr, flush=True)
    if args.source == "tfds":
        from tfstructvae.data.sources import DATASETS
        if args.dataset not in DATASETS or not DATASETS[args.dataset][0]:
            raise DataError(f"no TFDS name for dataset {args.dataset!r}")
        write_tfds(DATASETS[args.dataset][0], args.out, args.shards, args.data_dir, progress=progress)
    else:
        write_dataset(load_dataset(args.dataset, args.data_dir, source=args.source), args.out, args.shards,
                      progress=progress)
    data = load_shards(args.out)        # read back: the manifest and every shard's size are checked
    return {"out": args.out, "name": data.name, "train_examples": len(data.x_train),
            "test_examples": len(data.x_test), "image_shape": list(data.image_shape), "shards": args.shards}


def _verbosity(v: str):
    return v if v == "auto" else int(v)


def _seed_list(text):
    from tfstructvae.config import ConfigError
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds expects integers separated by commas, e.g. 0,1,2; got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="tfstructvae", description="Semi-supervised VAEs with structured encoders.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a model into a run directory")
    _add_train_args(tr)
    tr.add_argument("--no-test", action="store_true",
                    help="do not score the test set at the end: a validation study reads the held-out "
                         "--validation-size images' error in metrics.json (`tfstructvae evaluate RUN` "
                         "scores the test set later)")
    tu = sub.add_parser("tune", help="choose settings on a held-out validation split (test set untouched)")
    _add_train_args(tu)
    # tune keeps the points it finished (it resumes by itself); --overwrite starts it over
    tu.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2,...",
                    help="values to try for a field (repeat for more fields; every combination is trained); "
                    "recipe=PRESET1,PRESET2 tries each preset's objective and classifier on your data and "
                    "schedule (--set values still win). Default: recipe=mnist-shift,fashion-mnist")
    tu.add_argument("--seeds", metavar="S1,S2,...",
                    help="train every point on each of these label draws (labelled examples, hold-out, data "
                    "order, initial weights) and keep the lowest mean: one draw can hide a failure another "
                    "shows. Default: the one draw the configuration names")
    ev = sub.add_parser("evaluate", help="reload a run and print its test metrics")
    ev.add_argument("run_dir")
    ev.add_argument("--data-dir")
    ex = sub.add_parser("export", help="export a run as a SavedModel (classify, encode, decode, reconstruct)")
    ex.add_argument("run_dir")
    ex.add_argument("out_dir")
    an = sub.add_parser("analogies", help="PNG: each test image's style decoded with every class")
    an.add_argument("model", help="a run directory or an exported SavedModel")
    an.add_argument("--out", required=True)
    an.add_argument("--data-dir")
    an.add_argument("--count", type=int, default=10, help="number of source images")
    an.add_argument("--node", help="the categorical node to vary (default: the class)")
    an.add_argument("--style", help="the continuous node read as the style (default: the class's child)")
    sg = sub.add_parser("style-grid", help="PNG: a grid over a 2-d style for every class")
    sg.add_argument("model", help="a run directory or an exported SavedModel")
    sg.add_argument("--out", required=True)
    sg.add_argument("--steps", type=int, default=8)
    sg.add_argument("--node", help="the categorical node to vary (default: the class)")
    sg.add_argument("--style", help="the 2-d continuous node to sweep (default: the class's child)")
    pd = sub.add_parser("prepare-data", help="write a dataset as TFRecord shards that training reads on demand "
                        "(for data larger than memory); train with --data-dir OUT")
    pd.add_argument("--dataset", default="mnist", help="a known dataset, or your own .npz given as --data-dir")
    pd.add_argument("--data-dir", help="where its files are (as for train)")
    pd.add_argument("--source", choices=("auto", "files", "tfds"), default="auto",
                    help="tfds: stream a prepared TFDS copy a batch at a time (flat memory)")
    pd.add_argument("--out", required=True, help="directory to write the shards to")
    pd.add_argument("--shards", type=int, default=4, help="files per split")
    args = parser.parse_args(argv)

    from tfstructvae.callbacks import NonFiniteError
    from tfstructvae.config import ConfigError, parse_overrides
    from tfstructvae.data import DataError
    from tfstructvae.distribution import WorkerLost
    from tfstructvae.rundir import RunDirError, read_run_config
    from tfstructvae.train import TrainingInterrupted, evaluate_run, train_and_evaluate
    try:
        if args.command == "train":
            cfg = config_from_args(args)
            if args.resume:   # the run's own settings, not the preset's; a run may go on for longer
                cfg = read_run_config(args.output_dir)
                epochs = args.epochs or parse_overrides(args.set).get("train.epochs")
                if epochs:
                    cfg = cfg.override(**{"train.epochs": int(epochs)})
            metrics = train_and_evaluate(cfg, args.output_dir, overwrite=args.overwrite, resume=args.resume,
                                         verbose=_verbosity(args.verbose), test=not args.no_test)
        elif args.command == "tune":
            from tfstructvae.tune import DEFAULT_GRID, parse_grid, tune
            explicit = {"objective.estimator": args.estimator, "objective.alpha": args.alpha,
                        **parse_overrides(args.set)}
            metrics = tune(config_from_args(args), parse_grid(args.grid) if args.grid else DEFAULT_GRID,
                           args.output_dir, verbose=0 if args.verbose == "0" else 1, restart=args.overwrite,
                           explicit=explicit, seeds=_seed_list(args.seeds))
        elif args.command in ("analogies", "style-grid"):
            metrics = draw(args)
        elif args.command == "prepare-data":
            metrics = prepare_data(args)
        elif args.command == "export":
            metrics = export_run(args.run_dir, args.out_dir)
        else:
            metrics = evaluate_run(args.run_dir, data_dir=args.data_dir)
    except TrainingInterrupted as e:
        print(f"tfstructvae {args.command}: {e}", file=sys.stderr)
        return 130
    except WorkerLost as e:
        print(f"tfstructvae {args.command}: error: {e}", file=sys.stderr)
        return 3
    except (ConfigError, DataError, RunDirError, NonFiniteError) as e:
        print(f"tfstructvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:    # a path the user gave that cannot be read or written
        where = f"{e.filename}: " if e.filename else ""
        print(f"tfstructvae {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
