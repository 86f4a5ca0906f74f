"""Faces: identity and lighting read from the encoder and set in the decoder (Extended Yale B).

    python benchmarks/yaleb.py --data-dir ../shared/data/yaleb --labels 5,20 --seeds 0,1,2 \
        --out benchmarks/results/yaleb/yaleb.json

Trains the `yaleb` preset (identity: l labelled faces per identity; the light's azimuth and
elevation known on those faces only; a free style; conv networks) and, on the same labelled faces
alone, the same networks as a supervised classifier (labelled minibatches only, no consistency
term). Reports identity test error and lighting R^2 / RMSE on the test faces, whose light
directions were held out per identity (data/yaleb.py); how the decoder obeys each factor (200
test faces decoded as every identity and under a 3x3 grid of lights, read back by the encoder:
`identity_swap_accuracy`, `lighting_swap_r2`); and draws per run: one test face relit
on a 5x5 grid of (azimuth, elevation), and one lighting with the identity varied.
Runs are resumable (finished runs are reused).
"""

from __future__ import annotations

import os
import sys

import numpy as np

def control(model, data, n: int = 200, batch: int = 50, grid: int = 3) -> dict:
    """How the decoder obeys each factor, read back by the encoder, on n test faces (style held).

    `identity_swap_accuracy`: each face decoded as every identity; how often q(identity | decoded)
    names the identity set. `lighting_swap_r2`: each face decoded under a grid x grid of light
    directions (5th to 95th percentile of the labelled faces'); R^2 of the light the encoder
    reads from the decoded faces against the light set, pooled.
    """
    import tensorflow as tf
    x = data.x_test[:n].astype(np.float32) / 255.0
    k = model.latent_graph["identity"].size
    light = data.node_labels_train["lighting"]
    low, high = np.nanpercentile(light, 5, axis=0), np.nanpercentile(light, 95, axis=0)
    az, el = np.meshgrid(np.linspace(low[0], high[0], grid), np.linspace(low[1], high[1], grid))
    directions = np.stack([az.ravel(), el.ravel()], 1).astype(np.float32)
    hits, total, set_light, read_light = 0, 0, [], []
    for i in range(0, len(x), batch):
        held = {name: model.point_value(name, d) for name, d in model.encode(x[i:i + batch]).items()}
        b = len(x[i:i + batch])
        for identity in range(k):
            decoded = model.decode(**dict(held, identity=tf.fill([b], identity))).mean()
            hits += int(tf.reduce_sum(tf.cast(tf.argmax(model.classify(decoded), -1) == identity, tf.int32)))
            total += b
        for d in directions:
            decoded = model.decode(**dict(held, lighting=tf.repeat(d[None], b, axis=0))).mean()
            read_light.append(model.encode(decoded)["lighting"].mean().numpy())
            set_light.append(np.repeat(d[None], b, axis=0))
    t, g = np.concatenate(set_light), np.concatenate(read_light)
    return {"identity_swap_accuracy": hits / total,
            "lighting_swap_r2": float(1.0 - ((t - g) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()),
            "control_faces": len(x)}


def figures(model, data, stem: str, index: int | None = None, grid: int = 5, identities: int = 19) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf
    if index is None:           # the best-lit test face: a face in shadow shows little of its identity
        index = int(np.argmax(data.x_test.reshape(len(data.x_test), -1).mean(1)))
    x = data.x_test[index:index + 1].astype(np.float32) / 255.0
    held = {n: model.point_value(n, d) for n, d in model.encode(x).items()}
    light = data.node_labels_train["lighting"]
    low, high = np.nanpercentile(light, 5, axis=0), np.nanpercentile(light, 95, axis=0)
    az, el = np.meshgrid(np.linspace(low[0], high[0], grid), np.linspace(high[1], low[1], grid))
    named = {n: tf.repeat(v, grid * grid, axis=0) for n, v in held.items()}
    named["lighting"] = np.stack([az.ravel(), el.ravel()], 1).astype(np.float32)
    relit = model.decode(**named).mean().numpy()
    paths = [f"{stem}_relit.png", f"{stem}_identities.png"]
    fig, axes = plt.subplots(grid, grid + 1, figsize=(grid + 1, grid), dpi=120)
    for r in range(grid):
        for c in range(grid):
            axes[r, c + 1].imshow(relit[r * grid + c, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[r, 0].imshow(x[0, ..., 0] if r == 0 else np.ones_like(x[0, ..., 0]), cmap="gray", vmin=0, vmax=1)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("test face", fontsize=7)
    fig.suptitle("lighting set on a grid: azimuth left to right, elevation top to bottom; identity and style held",
                 fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[0])
    plt.close(fig)
    named = {n: tf.repeat(v, identities, axis=0) for n, v in held.items()}
    named["identity"] = tf.range(identities)
    faces = model.decode(**named).mean().numpy()
    fig, axes = plt.subplots(1, identities + 1, figsize=(identities + 1, 1.3), dpi=120)
    axes[0].imshow(x[0, ..., 0], cmap="gray", vmin=0, vmax=1)
    for c in range(identities):
        axes[c + 1].imshow(faces[c, ..., 0], cmap="gray", vmin=0, vmax=1)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"identities 0..{identities - 1} under the test face's lighting and style", fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    from budgets import arguments, run_budgets

    parser = arguments(__doc__, "5,20", "runs/yaleb", "the folder of CroppedYale24.tar.gz")
    parser.add_argument("--control-faces", type=int, default=200,
                        help="test faces decoded with every identity and a grid of lights")
    args = parser.parse_args(argv)
    from tfstructvae.rundir import load_run
    from tfstructvae.train import load_data
    data = {}

    def describe(kind, l, seed, run_dir, metrics):
        row = {"labelled_faces": metrics["labelled_examples"], "test_error": metrics["test_error"],
               "test_r2/lighting": metrics["test_r2/lighting"], "test_rmse/lighting": metrics["test_rmse/lighting"]}
        line = ""
        if kind == "semi-supervised":
            cfg, model = load_run(run_dir)
            if "faces" not in data:
                data["faces"] = load_data(cfg)
            row["figures"] = figures(model, data["faces"], os.path.splitext(args.out)[0] + f"_l{l}_s{seed}")
            row.update(control(model, data["faces"], args.control_faces))
            line = (f"  decoded identity read back {100 * row['identity_swap_accuracy']:.1f}%, "
                    f"decoded lighting R^2 {row['lighting_swap_r2']:.3f}")
        return row, (f"{row['labelled_faces']} labelled faces: identity error {100 * row['test_error']:.2f}%  "
                     f"lighting R^2 {row['test_r2/lighting']:.3f}" + line)

    run_budgets("yaleb", args, "yaleb.py", describe, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
