"""The one adapter to Keras' private internals: the functional graph, and the epoch a fit starts at.

A functional model's graph is reached through private attributes
(`_keras_history`, `_inbound_nodes`) and Keras' own `Node` objects. Every use
of them lives in this module, so a Keras upgrade that moves them breaks one
file. The rest of the package sees `Call`s: an operation (a layer, or a
`keras.ops` function such as `keras.ops.relu`) with its input and output
tensors. A callback that resumes a fit sets where it starts with
`start_fit_at` (what Keras' own `BackupAndRestore` does). Importing it warns
(a `RuntimeWarning`) under a Keras version whose internals it was not read
for (`TESTED`).

Example:
    >>> import keras
    >>> from keras_team import graph
    >>> inputs = keras.Input((4,))
    >>> x = keras.ops.relu(keras.layers.Dense(3, name="d1")(inputs))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="d2")(x))
    >>> [call.operation.name for call in graph.layer_calls(model)]
    ['d1', 'relu', 'd2']
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import warnings

import keras
from keras.src.backend.common import global_state

TESTED = ("3.15.",)
"""The Keras versions whose private internals (`_keras_history`, `_inbound_nodes`, `Node`, `global_state`,
`Functional._run_through_graph`, `Layer._flatten_layers`, `Trainer._initial_epoch`) this module was read for."""


def check_version(version: str) -> bool:
    """Warn when `version` of Keras is not one this module was read for; True when it is.

    Example:
        >>> check_version("3.15.1")
        True
    """
    if version.startswith(TESTED):
        return True
    warnings.warn(f"keras_team reads Keras' functional graph and sets a resumed fit's first epoch through private "
                  f"attributes, read for Keras {', '.join(v + 'x' for v in TESTED)}; this is {version}: cuts and "
                  "resumed fits may fail if they moved",
                  RuntimeWarning, stacklevel=2)
    return False


check_version(keras.__version__)


def start_fit_at(model: keras.Model, epoch: int) -> None:
    """Make the `fit` now starting (from a callback's `on_train_begin`) start at `epoch`, as Keras' own
    `BackupAndRestore` does: Keras offers a callback no public way. 0 leaves `fit`'s `initial_epoch`.

    Example:
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> class Resume(keras.callbacks.Callback):
        ...     def on_train_begin(self, logs=None):
        ...         start_fit_at(self.model, 2)
        >>> model.fit(np.ones((2, 1)), np.ones((2, 1)), epochs=3, verbose=0, callbacks=[Resume()]).epoch
        [2]
    """
    model._initial_epoch = epoch or None  # read once by `fit` after `on_train_begin`; None: fit's own


@dataclasses.dataclass(frozen=True, eq=False)
class Call:
    """One call of an operation in a model's graph.

    Attributes:
        operation: the layer, or the `keras.ops` operation, that was called.
        inputs: its input tensors, flattened.
        outputs: its output tensors, flattened.
    """

    operation: object
    inputs: tuple
    outputs: tuple


def _call_of(node) -> Call:
    return Call(node.operation, tuple(node.input_tensors), tuple(node.output_tensors))


def _node_of(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def producer(tensor) -> Call:
    """The call that produced a symbolic tensor of a functional graph.

    Example:
        >>> x = keras.layers.Dense(2, name="d")(keras.Input((3,)))
        >>> producer(x).operation.name
        'd'
    """
    return _call_of(_node_of(tensor))


def is_input(call: Call) -> bool:
    """Whether `call` is the placeholder of a model input."""
    return isinstance(call.operation, keras.layers.InputLayer)


def layer_calls(model: keras.Model) -> list[Call]:
    """The calls between `model.inputs` and `model.outputs`, in topological order.

    Model inputs are left out; each call appears once, a layer called twice
    appears once per call.
    """
    order, seen = [], set()

    def visit(tensor):
        node = _node_of(tensor)
        if id(node) in seen:
            return
        seen.add(id(node))
        call = _call_of(node)
        for parent in call.inputs:
            visit(parent)
        if not is_input(call):
            order.append(call)

    for output in model.outputs:
        visit(output)
    return order


def replay(model: keras.Model, inputs):
    """`model`'s layers called one by one on new symbolic `inputs`: its outputs there.

    The layers (and their weights) are shared, and each appears in the new
    graph as a layer of its own, not nested in `model`, so cut points and
    taps of a model built on the result see them.

    Example:
        >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
        >>> x = keras.Input((4,))
        >>> outer = keras.Model(x, replay(inner, keras.layers.Identity(name="first")(x)))
        >>> [layer.name for layer in outer.layers]
        ['input_layer_1', 'first', 'd']
    """
    functional = getattr(model, "_functional", model)  # a Sequential runs through the functional graph it holds
    return functional._run_through_graph(inputs, operation_fn=lambda operation: operation)


def final_activation(operation) -> str | None:
    """The name of the activation an operation applies last, if any.

    Covers `Activation` and `Softmax` layers, layers with an `activation`
    argument (e.g. `Dense`), and `keras.ops` calls such as
    `keras.ops.sigmoid`.

    Example:
        >>> final_activation(keras.layers.Dense(2, activation="sigmoid"))
        'sigmoid'
    """
    if isinstance(operation, keras.layers.Softmax):
        return "softmax"
    if isinstance(operation, keras.layers.Layer):
        if isinstance(operation, keras.Model):
            calls = layer_calls(operation) if has_graph(operation) else []
            return final_activation(calls[-1].operation) if calls else None
        activation = getattr(operation, "activation", None)
        return getattr(activation, "__name__", None)
    return type(operation).__name__.lower()  # a keras.ops operation: Softmax, Sigmoid, Relu ...


def output_layer(operation):
    """The layer computing an operation's output, looking inside nested models.

    A Sequential model (built or not) or a functional model with one output
    is looked into (also a model inside it), down to the layer that produces
    that output; other operations are their own output layer.

    Example:
        >>> head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="logits")])
        >>> output_layer(head).name
        'logits'
    """
    while True:
        if isinstance(operation, keras.Sequential) and operation.layers:  # built or not
            operation = operation.layers[-1]
        elif has_graph(operation) and len(operation.outputs) == 1 and not is_input(producer(operation.outputs[0])):
            operation = producer(operation.outputs[0]).operation
        else:
            return operation


def sublayers(layer) -> list:
    """`layer` and every layer it holds, at any depth (wrapped layers, nested models), input layers left out.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [sub.name for sub in sublayers(model)]
        ['m', 'd']
    """
    return [sub for sub in layer._flatten_layers(include_self=True, recursive=True)
            if not isinstance(sub, keras.layers.InputLayer)]


def has_graph(model) -> bool:
    """Whether `model` is a built Sequential or functional model (it has a graph to walk)."""
    if not isinstance(model, keras.Model):
        return False
    try:
        return bool(model.outputs)
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def fresh_names():
    """Keras auto-names layers made inside as in a fresh process (`activation_17` every time).

    Auto-names (`activation`, `add_9`) come from per-process counters, so a
    model built twice in one process gets two sets; inside this block the
    counters start from zero, and afterwards continue above both sets.

    Example:
        >>> with fresh_names():
        ...     first = keras.layers.Activation("relu").name
        >>> with fresh_names():
        ...     second = keras.layers.Activation("relu").name
        >>> first == second
        True
    """
    outer = global_state.get_global_attribute("object_name_uids", collections.defaultdict(int), set_to_default=True)
    inner = collections.defaultdict(int)
    global_state.set_global_attribute("object_name_uids", inner)
    try:
        yield
    finally:
        for prefix, count in inner.items():
            outer[prefix] = max(outer[prefix], count)
        global_state.set_global_attribute("object_name_uids", outer)
