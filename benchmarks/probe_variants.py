"""Which probe beats today's on VALIDATION: one cut, each cut, several cuts, augmented shots (issue 23).

For each seed: the default config's leader trained on the source (the
recipe's own leader stage; `--leaders DIR` keeps `<seed>.keras`, the files
`transfer_gain.py --leaders` reads), then for each shot count the target's
k shots and its validation split. Features at every block cut of the leader
(`keras_team.cut_points(view="blocks")`), global-average-pooled, and the
flattened default cut (`pool1`, what the default probe reads). Each feature
set is standardized by the training split and L2-normalised, as
`keras_team.heads.Standardize` does, then scikit-learn's logistic regression
is fitted, C chosen on validation accuracy, then log-loss. Variants: the
default cut alone (`today_flat_pool1`); each pooled cut (`gap_<cut>`);
concatenations of cuts (each part normalised; `concat_*`); averages of the
per-cut probes' probabilities (`avg_*`); each with the k shots alone
(`none`) or with augmented copies (`shift8`: the shots and 7 copies shifted
by up to 1/8 of a side with mirrored borders; `flip2`: and their mirror
images; `flipshift8`: both). `team+<variant>`: the team's ensemble rule
(`keras_team.Team.ensemble_weights`) over today's probe and that variant.
Validation accuracy only: test is never read.

Run from the repository root:

    python benchmarks/probe_variants.py --data digits --augs shift8
    python benchmarks/probe_variants.py --data patches --augs flip2,flipshift8,shift8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402

from _common import RESULTS, load_average, machine, write_json  # noqa: E402
from transfer_gain import data_overrides, summary  # noqa: E402
from keras_team import Team, cut_points, graph  # noqa: E402
from keras_team.app.config import load_config  # noqa: E402
from keras_team.app.progress import Output  # noqa: E402
from keras_team.app.recipe import Recipe, load_tasks, make_plan  # noqa: E402
from keras_team.app.workspace import Workspace  # noqa: E402
from keras_team.files import load_model  # noqa: E402

NAME = "probe_variants"
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
AUGS = {"none": (False, 1), "shift8": (False, 8), "flip2": (True, 2), "flipshift8": (True, 8)}  # (flip, views)
TEAM_WITH = ("today_flat_pool1", "gap_block1_out", "gap_pool1", "avg_body_gap", "avg_all_gap")


def leader_for(seed: int, overrides: list[str], folder: str) -> keras.Model:
    """The default config's leader of `seed` (the recipe's leader stage), trained once and kept in `folder`."""
    path = os.path.join(folder, f"{seed}.keras")
    if not os.path.exists(path):
        out = tempfile.mkdtemp(prefix="probe_variants_")
        keras.backend.clear_session()
        config = load_config(overrides=[f"seed={seed}", f"output_dir={out}", *overrides])
        workspace = Workspace.prepare(out, config)
        with workspace.start():
            Recipe(config, workspace, make_plan(config), output=Output("quiet")).train_leader(0)
        os.replace(os.path.join(out, "leader.keras"), path)
    return load_model(path, compile=False)


def normalised(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardized by `train`'s statistics (as `heads.adapt`), then each vector L2-normalised."""
    std = train.std(0)
    mean, scale = train.mean(0), 1.0 / (std + 1e-3 * std.mean() + 1e-12)
    out = []
    for f in (train, *others):
        z = (f - mean) * scale
        out.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
    return out


def logreg(train, y, val, yv) -> tuple[float, np.ndarray]:
    """Validation accuracy and probabilities of the logistic regression whose C is best on validation."""
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000).fit(train, y)
        p = model.predict_proba(val)
        score = (float((p.argmax(1) == yv).mean()), -log_loss(yv, p, labels=model.classes_), p)
        if best is None or score[:2] > best[:2]:
            best = score
    return best[0], best[2]


def views(x: np.ndarray, flip: bool, n: int, rng) -> np.ndarray:
    """The shots, then (with `flip`) their mirror images, then shifted copies (up to 1/8 of a side, mirrored borders)."""
    side = x.shape[1]
    pad = max(1, side // 8)
    out = [x] + ([x[:, :, ::-1]] if flip else [])
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    while len(out) < n:
        dy, dx = rng.integers(0, 2 * pad + 1, 2)
        view = padded[:, dy:dy + side, dx:dx + side]
        out.append(view[:, :, ::-1] if flip and rng.random() < 0.5 else view)
    return np.concatenate(out[:n])


def one(leader: keras.Model, target, augs: list[str], seed: int, cuts_too: bool) -> dict:
    """Every variant's validation accuracy for one seed and shot count."""
    blocks = cut_points(leader, view="blocks")
    names = [c.name for c in blocks]
    calls = graph.layer_calls(leader)
    reader = keras.Model(leader.inputs, [calls[c.position].outputs[0] for c in blocks])
    body = names[:names.index("pool1") + 1]
    (x, y), (xv, yv) = target.splits["train"], target.splits["validation"]
    rng = np.random.default_rng(seed)
    row, base = {}, None
    for aug in ["none", *augs]:
        flip, n = AUGS[aug]
        xa, ya = views(x, flip, n, rng), np.tile(y, n)
        feats = reader.predict(np.concatenate([xa, xv]), batch_size=256, verbose=0)
        na = len(xa)
        cands = {"today_flat_pool1": feats[names.index("pool1")].reshape(len(feats[0]), -1)}
        if cuts_too:
            cands.update({f"gap_{name}": (f.mean(axis=(1, 2)) if f.ndim == 4 else f) for name, f in zip(names, feats)})
        probs = {}
        for name, f in cands.items():
            train, val = normalised(f[:na], f[na:])
            row[f"{aug}/{name}"], probs[name] = logreg(train, ya, val, yv)
        if cuts_too:
            for label, parts in {"concat_body_gap": [f"gap_{c}" for c in body],
                                 "concat_body_gap+flat": [f"gap_{c}" for c in body[:-1]] + ["today_flat_pool1"],
                                 "concat_all_gap": [f"gap_{c}" for c in names]}.items():
                trains, vals = zip(*(normalised(cands[p][:na], cands[p][na:]) for p in parts))
                row[f"{aug}/{label}"] = logreg(np.concatenate(trains, 1), ya, np.concatenate(vals, 1), yv)[0]
            for label, parts in {"avg_body_gap": [f"gap_{c}" for c in body],
                                 "avg_body_gap+flat": [f"gap_{c}" for c in body] + ["today_flat_pool1"],
                                 "avg_all_gap": [f"gap_{c}" for c in names]}.items():
                probs[label] = np.mean([probs[p] for p in parts], 0)
                row[f"{aug}/{label}"] = float((probs[label].argmax(1) == yv).mean())
        base = probs["today_flat_pool1"] if base is None else base
        for label in (TEAM_WITH if cuts_too else TEAM_WITH[:1]):
            weighting = Team.ensemble_weights({"today": np.log(base + 1e-9), "other": np.log(probs[label] + 1e-9)}, yv)
            row[f"{aug}/team+{label}"] = weighting.validation_accuracy
    return {key: round(value, 4) for key, value in row.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits", help="digits or patches (as transfer_gain.py)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--augs", default="shift8", help=f"augmentations beside none, from {', '.join(list(AUGS)[1:])}")
    parser.add_argument("--no-cuts", action="store_true", help="today's cut only (no pooled cuts)")
    parser.add_argument("--leaders", help="a folder for the seeds' leaders (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS / f"{NAME}_{{data}}.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    overrides = data_overrides(args.data)
    leaders = args.leaders or tempfile.mkdtemp(prefix="probe_variants_leaders_")
    os.makedirs(leaders, exist_ok=True)
    augs = [a for a in args.augs.split(",") if a]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        leader = leader_for(seed, overrides, leaders)
        for shots in (int(k) for k in args.shots.split(",")):
            config = load_config(overrides=[f"seed={seed}", "output_dir=unused", f"data.target.shots={shots}", *overrides])
            rows.append({"seed": seed, "shots": shots, **one(leader, load_tasks(config)[1], augs, seed, not args.no_cuts)})
            print(rows[-1], flush=True)
    result = {"benchmark": NAME, "what": "validation accuracy of probe variants (test never read)", "data": args.data,
              "per_seed": rows, "validation_accuracy": {}, "machine": machine(load_before)}
    for shots in sorted({r["shots"] for r in rows}):
        same = [r for r in rows if r["shots"] == shots]
        result["validation_accuracy"][f"{shots}shot"] = {key: summary([r[key] for r in same]) for key in same[0] if "/" in key}
        print(f"{args.data}, {shots} shots, validation accuracy, mean over seeds:")
        for key, figures in result["validation_accuracy"][f"{shots}shot"].items():
            print(f"  {key:34s} {figures['mean']:.3f} +- {figures['std']:.3f}")
    print("wrote", write_json(args.output.format(data=args.data), result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
