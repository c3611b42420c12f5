"""A team with two leaders and a follower that distils from both.

    python examples/two_leaders_distill.py --epochs 50 --output team.keras

Two leaders of different architectures learn digits 0-4; each is cut,
frozen and given a new head for digits 5-9. A follower reads both leaders'
softened probabilities (concatenated) and also matches them with a KL term
(`keras_team.Distill`); the team trains on the sum of the members' losses and
is saved as one `.keras` file.
"""

import argparse

import keras
import numpy as np

import keras_team
from keras_team import data, heads, zoo


def trained_leader(model, source, epochs):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(source.dataset("train", training=True), epochs=epochs, verbose=0)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--leader-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--output", default="team.keras")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    source, target = data.digits_tasks(shots=args.shots)
    n = target.num_classes
    resnet = trained_leader(zoo.residual_cnn(source.input_shape, source.num_classes), source, args.leader_epochs)
    lenet = trained_leader(zoo.seed_cnn(source.input_shape, source.num_classes, name="lenet"), source,
                           args.leader_epochs)
    leaders = {"resnet": keras_team.transfer(resnet, keep="pool1", head=heads.dense(n)),
               "lenet": keras_team.transfer(lenet, keep=3, head=heads.dense(n))}
    student = keras_team.Follower(zoo.mlp(n), name="student", tap="probs", temperature=2.0, combine="concat",
                                  distill=keras_team.Distill(temperature=4.0, student_loss_weight=0.5))
    team = keras_team.Team(leaders, [student])
    team.compile()
    team.fit(target.dataset("train", training=True), validation_data=target.dataset("validation"),
             epochs=args.epochs, verbose=0)

    x_val, y_val = target.splits["validation"]
    weighting = keras_team.Team.ensemble_weights(team.predict(x_val, verbose=0), y_val)
    x_test, y_test = target.splits["test"]
    predictions = team.predict(x_test, verbose=0)
    for name, logits in predictions.items():
        print(f"{name:8s} test accuracy {np.mean(np.argmax(logits, -1) == y_test):.3f}")
    ensemble = keras.ops.convert_to_numpy(keras_team.Team.ensemble(predictions, weighting.weights))
    print(f"ensemble test accuracy {np.mean(ensemble.argmax(-1) == y_test):.3f} ({weighting.rule})")
    team.save(args.output)


if __name__ == "__main__":
    main()
