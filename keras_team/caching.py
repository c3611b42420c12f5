"""Train a follower on cached taps: the frozen leaders run once, not every batch.

The write-up recomputes the frozen leader for every batch of every epoch.
Here the leaders' taps are computed in one pass over the data and the
follower's own sub-model (`Team.follower_graphs[name]`, the same weights the
team uses) is fitted on them with `model.fit`.

Example:
    >>> history = fit_follower(team, "mlp", task.dataset("train"), epochs=10)  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_team.distribute import replica_batch_size
from keras_team.errors import KerasTeamError
from keras_team.taps import tap_key
from keras_team.team import Team

# Inference batch of the caching pass: batch size does not change a frozen
# leader's outputs, and larger batches cost fewer calls.
CACHE_BATCH = 256


def _follower(team: Team, name: str):
    for follower in team.followers:
        if follower.name == name:
            return follower
    raise KerasTeamError("follower", name, f"one of the team's followers: {', '.join(f.name for f in team.followers)}")


def cache_taps(team: Team, name: str, dataset: tf.data.Dataset, *, verbose: int = 1):
    """One pass of the leaders over `dataset`: the follower's inputs and the labels.

    Args:
        team: a built `Team`.
        name: the follower whose inputs to compute.
        dataset: batched `(x, y)`; its order is kept (it is re-batched by
            `CACHE_BATCH` for the pass).
        verbose: 1 shows a progress bar, 2 one line at the end, 0 nothing.

    Returns:
        `(inputs, labels)`: a dict of numpy arrays keyed like the follower
        graph's inputs, and the labels in the same order.

    Example:
        >>> inputs, labels = cache_taps(team, "mlp", task.dataset("train"))  # doctest: +SKIP
    """
    follower = _follower(team, name)
    leaders = list(follower.leaders or team.leaders)
    keys = sorted({tap_key(tap) for tap in follower.taps_needed()})
    columns = {f"{leader}_{key}": [] for leader in leaders for key in keys}
    labels = []
    dataset = dataset.unbatch().batch(CACHE_BATCH)
    progress = keras.utils.Progbar(None, verbose=verbose, unit_name="batch")
    for x, y in dataset:
        for leader in leaders:
            outputs = team.tap_models[leader].predict(x, batch_size=CACHE_BATCH, verbose=0)
            for key in keys:
                columns[f"{leader}_{key}"].append(np.asarray(outputs[key]))
        labels.append(np.asarray(y))
        progress.add(1)
    progress.update(len(labels), finalize=True)
    return {k: np.concatenate(v) for k, v in columns.items()}, np.concatenate(labels)


def fit_follower(
    team: Team,
    name: str,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None = None,
    *,
    epochs: int = 10,
    optimizer: keras.optimizers.Optimizer | str = "adam",
    batch_size: int = 32,
    seed: int = 0,
    callbacks: list | None = None,
    verbose: int | str = "auto",
) -> keras.callbacks.History:
    """Fit follower `name` on its leaders' taps, computed once.

    The labels are used once per follower output (one per leader with
    ``combine="each"``), so the loss is the same sum the team trains on.

    Args:
        team: the team the follower belongs to (its weights are updated).
        name: follower name.
        train: batched `(x, y)` of raw inputs, unshuffled (shuffling is done
            on the cache, seeded by `seed`).
        validation: optional batched `(x, y)` for `validation_data`.
        epochs, optimizer, batch_size, callbacks, verbose: as for `model.fit`.

    Example:
        >>> fit_follower(team, "mlp", task.dataset("train"), epochs=10)  # doctest: +SKIP
    """
    follower = _follower(team, name)
    graph = team.follower_graphs[name]
    outputs = len(graph.outputs)
    defaults = team.loss_weight_defaults()

    def as_dataset(data, shuffle):
        inputs, labels = cache_taps(team, name, data, verbose=verbose if verbose in (0, 2) else 1)
        ds = tf.data.Dataset.from_tensor_slices((inputs, tuple([labels] * outputs)))
        if shuffle:
            ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(replica_batch_size(batch_size, len(labels))).prefetch(tf.data.AUTOTUNE)

    graph.compile(
        optimizer=optimizer,
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * outputs,
        loss_weights=[defaults[out] for out in follower.output_names(list(follower.leaders or team.leaders))],
        metrics=[[keras.metrics.SparseCategoricalAccuracy(name="accuracy")]] * outputs,
    )
    return graph.fit(
        as_dataset(train, shuffle=True),
        validation_data=as_dataset(validation, shuffle=False) if validation is not None else None,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the cache is shuffled by tf.data, seeded
    )
