"""Train a team on several machines with MultiWorkerMirroredStrategy.

Start the same command on every machine, each with its index (0: the chief):

    python examples/multi_worker.py --workers 10.0.0.1:2222,10.0.0.2:2222 --index 0 --output /shared/run
    python examples/multi_worker.py --workers 10.0.0.1:2222,10.0.0.2:2222 --index 1 --output /shared/run

`--output` must be a folder every worker reads (the checkpoints are there);
on one machine, two loopback addresses (127.0.0.1:PORT) run both workers.
Restarted after a crash, the cluster resumes after its last finished epoch.
Keras' own `model.fit` does not run under this strategy in Keras 3;
`keras_team.distribute.fit` does.
"""

import argparse
import os


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", required=True, help="HOST:PORT of every worker, comma-separated, chief first")
    parser.add_argument("--index", type=int, required=True, help="this worker's place in --workers")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", default="run", help="a folder every worker reads")
    args = parser.parse_args(argv)

    from keras_team import distribute

    os.environ["TF_CONFIG"] = distribute.cluster_config(args.workers.split(","), args.index)
    strategy = distribute.choose_strategy("multi_worker")  # before anything else starts TensorFlow

    import keras_team

    source, target = keras_team.data.digits_tasks(shots=10, batch_size=32)  # 32: the global batch
    with strategy.scope():
        leader = keras_team.transfer(keras_team.zoo.seed_cnn(source.input_shape, source.num_classes), keep=3,
                                     head=keras_team.heads.dense(target.num_classes))
        team = keras_team.Team({"leader": leader}, [keras_team.Follower(keras_team.zoo.mlp(target.num_classes))])
        team.compile()
    distribute.fit(team, target.dataset("train", training=True), epochs=args.epochs,
                   validation_data=target.dataset("validation"), checkpoint_dir=f"{args.output}/checkpoints",
                   verbose=2)
    if distribute.is_chief(strategy):
        team.save(f"{args.output}/team.keras")
        print(f"saved {args.output}/team.keras")


if __name__ == "__main__":
    main()
