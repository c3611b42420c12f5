"""Train a team on your own folder of images with a keras.applications backbone, then export it.

    python examples/own_folder.py my_images/ --application MobileNetV3Small --epochs 10 --output exports/

`my_images/` holds one subfolder of images per class. The script transfers a
pretrained backbone (cut at a middle block, frozen, a new head), adds an MLP
follower reading the cut's features, trains the team, prints its test
accuracy and exports it as a SavedModel for TF Serving and a LiteRT file,
both checked against the Keras model on the validation split.
"""

import argparse
import pathlib

import keras

import keras_team
from keras_team import data, export, heads, zoo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a folder of class subfolders of images")
    parser.add_argument("--application", default="MobileNetV3Small", help="a keras.applications model name")
    parser.add_argument("--weights", default="imagenet", help="imagenet, or none for random weights (offline)")
    parser.add_argument("--keep", help="where to cut (default: the middle block of the block view)")
    parser.add_argument("--shots", type=int, help="labelled images per class (default: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--output", default="exports", help="where the artefacts go")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    task = data.from_folder(args.folder, shots=args.shots, batch_size=16)
    weights = None if args.weights.lower() == "none" else args.weights
    leader = zoo.application(args.application, task.input_shape, task.num_classes, weights=weights)
    blocks = keras_team.cut_points(leader, view="blocks")
    keep = args.keep or blocks[(len(blocks) - 1) // 2].name
    student = keras_team.transfer(leader, keep=keep, head=heads.dense(task.num_classes))
    team = keras_team.Team({"leader": student}, [keras_team.Follower(zoo.mlp(task.num_classes))])
    team.compile()
    team.fit(task.dataset("train", training=True), validation_data=task.dataset("validation"),
             epochs=args.epochs, verbose=2)
    print({k: round(v, 3) for k, v in team.evaluate(task.dataset("test"), return_dict=True, verbose=0).items()})

    out = pathlib.Path(args.output)
    version = export.saved_model(team, out / "serving", name="team", input_dtype="uint8",
                                 class_names=task.class_names)
    export.serving_config(out / "serving")
    litert = export.tflite(team, out / "team.tflite", input_dtype="uint8", class_names=task.class_names)
    x_val, y_val = task.splits["validation"]
    report = export.verify(team, {"saved_model": version, "tflite": litert}, x_val, y_val,
                           report_path=out / "export_report.json")
    print(f"cut at {keep}; exported to {out} (parity passed: {report['passed']})")


if __name__ == "__main__":
    main()
