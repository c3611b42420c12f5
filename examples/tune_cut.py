"""Search the cut, the head and the fine-tuning depth with KerasTuner, then retrain the winner.

    python examples/tune_cut.py --trials 10 --epochs 30 --output runs/tune-example

The leader is the small ResNet of `keras_team.zoo`, trained on digits 0-4;
the search transfers it to digits 5-9 with 5 labelled images per class and
chooses on (capped) validation data, never on the test split.
"""

import argparse

import keras

import keras_team
from keras_team.tuning import TransferHyperModel, cap_per_class, make_tuner, write_results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuner", default="random", choices=["random", "bayesian", "hyperband", "grid"])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial, both phases together")
    parser.add_argument("--leader-epochs", type=int, default=20)
    parser.add_argument("--output", default="runs/tune-example")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    source, target = keras_team.data.digits_tasks(shots=5)
    leader = keras_team.zoo.residual_cnn(source.input_shape, source.num_classes)
    leader.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    leader.fit(*source.splits["train"], epochs=args.leader_epochs, verbose=0)

    hypermodel = TransferHyperModel(leader, target.num_classes, max_unfreeze=2)
    tuner = make_tuner(hypermodel, tuner=args.tuner, max_trials=args.trials, directory=args.output,
                       overwrite=True)
    x_val, y_val = cap_per_class(*target.splits["validation"], 10)
    tuner.search(*target.splits["train"], validation_data=(x_val, y_val), epochs=args.epochs, verbose=0)
    write_results(tuner, args.output)

    best_hp = tuner.get_best_hyperparameters()[0]
    model = hypermodel.build(best_hp)
    hypermodel.fit(best_hp, model, *target.splits["train"], validation_data=(x_val, y_val),
                   epochs=args.epochs, verbose=0)
    model.save(f"{args.output}/best.keras")
    print("best:", best_hp.values)


if __name__ == "__main__":
    main()
