"""KerasTuner search over a leader's cut, the new head and the two-phase fine-tune.

Installs as `keras_team.tuning`. Names load lazily, so the CLI parses its
arguments before TensorFlow starts.

Example:
    >>> from keras_team.tuning import TransferHyperModel, make_tuner
    >>> tuner = make_tuner(TransferHyperModel(leader, 5, cuts=["fc1"]), max_trials=1, directory=tmp, progress=False)
    >>> tuner.search(x, y, validation_data=(xv, yv), epochs=1, verbose=0)
    >>> model = tuner.get_best_models()[0]
    >>> model.predict(xv, verbose=0).shape      # it takes raw inputs
    (121, 5)
"""

from keras_team.extras import import_module

_EXPORTS = {
    "TransferHyperModel": "keras_team.tuning.hypermodel",
    "searchable_cuts": "keras_team.tuning.hypermodel",
    "FeatureCache": "keras_team.tuning.feature_cache",
    "make_tuner": "keras_team.tuning.search",
    "cap_per_class": "keras_team.tuning.search",
    "trial_table": "keras_team.tuning.search",
    "best_settings": "keras_team.tuning.search",
    "write_results": "keras_team.tuning.search",
    "TUNERS": "keras_team.tuning.search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_team.tuning' has no attribute {name!r}")
