"""Where a model may be cut: the articulation points of its layer graph.

A cut point is a layer call (or a `keras.ops` call) whose output all later
computation flows through. In a plain stack every layer qualifies; inside a
residual block none does. Depth counts *weighted* layers (normalisation
layers excluded; a nested model counts its own weighted layers), so
``keep=3`` on the write-up's CNN keeps conv1, conv2 and fc1.

The block view (`cut_points(model, view="blocks")`) keeps one cut per block
of the architecture, as a user thinks of a backbone: `expanded_conv_5_add`,
`block4c_add`, `conv4_block1_out`.

Example:
    >>> import keras_team
    >>> leader = keras_team.zoo.seed_cnn((8, 8, 1), num_classes=5)
    >>> [c.name for c in keras_team.cut_points(leader) if c.depth == 3]
    ['fc1']
"""

from __future__ import annotations

import dataclasses
import numbers
import re

import keras

from keras_team import graph
from keras_team.errors import KerasTeamError

NORMALIZATION_KINDS = {
    "batch": (keras.layers.BatchNormalization,),
    "layer": (keras.layers.LayerNormalization,),
    "group": (keras.layers.GroupNormalization,),
    "rms": (keras.layers.RMSNormalization,),
    "spectral": (keras.layers.SpectralNormalization,),
    "unit": (keras.layers.UnitNormalization,),
    "input": (keras.layers.Normalization,),
}
"""Normalisation layers by kind, the names `unfreeze(train_norms=...)` takes."""

NORMALIZATION_LAYERS = tuple(cls for classes in NORMALIZATION_KINDS.values() for cls in classes)


def normalization_kind(layer) -> str | None:
    """The `NORMALIZATION_KINDS` key of a normalisation layer, else None.

    Example:
        >>> normalization_kind(keras.layers.RMSNormalization())
        'rms'
    """
    for kind, classes in NORMALIZATION_KINDS.items():
        if isinstance(layer, classes):
            return kind
    return None


@dataclasses.dataclass(frozen=True)
class CutPoint:
    """One place a model may be cut.

    Attributes:
        name: the layer (or `keras.ops` operation) whose output is the cut.
        depth: weighted layers at or before the cut.
        output_shape: the shape of the features at the cut.
        position: index of the call in topological order
            (`keras_team.graph.layer_calls`); tells apart two calls of one layer.
    """

    name: str
    depth: int
    output_shape: tuple
    position: int


def weighted_layer_count(layer) -> int:
    """Weighted layers in `layer`: a nested model counts its own, recursively.

    Normalisation layers count 0, except `SpectralNormalization`, which
    wraps a weighted layer and counts as that layer. `keras.ops` calls
    count 0.

    Example:
        >>> import keras_team
        >>> weighted_layer_count(keras_team.zoo.seed_cnn((8, 8, 1), 5))
        5
        >>> weighted_layer_count(keras.layers.BatchNormalization())
        0
    """
    if isinstance(layer, keras.Model):
        return sum(weighted_layer_count(inner) for inner in layer.layers)
    if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.layers.InputLayer):
        return 0
    if normalization_kind(layer) not in (None, "spectral"):
        return 0
    if not layer.built:
        # Every Keras layer that owns weights declares them in build();
        # an unbuilt layer in a built model has none.
        return 0
    return int(bool(layer.weights))


def require_graph(model) -> None:
    """Raise `KerasTeamError` unless `model` is a built Sequential or functional model."""
    if not graph.has_graph(model):
        raise KerasTeamError(
            "leader",
            getattr(model, "name", model),
            "a built Sequential or functional keras.Model "
            "(give a Sequential a keras.Input first; subclassed models have no graph to cut)",
        )


def _all_cuts(model: keras.Model) -> tuple[list[CutPoint], list[graph.Call]]:
    require_graph(model)
    calls = graph.layer_calls(model)
    consumers_after = {}  # tensor id -> last position that consumes it
    for position, call in enumerate(calls):
        for tensor in call.inputs:
            consumers_after[id(tensor)] = position
    for tensor in model.outputs:
        consumers_after[id(tensor)] = len(calls)

    live = {id(t): t for t in model.inputs if consumers_after.get(id(t), -1) >= 0}
    counted, depth, cuts = set(), 0, []
    for position, call in enumerate(calls):
        operation = call.operation
        if id(operation) not in counted:
            counted.add(id(operation))
            depth += weighted_layer_count(operation)
        for tensor in call.outputs:
            live[id(tensor)] = tensor
        live = {k: t for k, t in live.items() if consumers_after.get(k, -1) > position}
        if len(call.outputs) == 1 and set(live) == {id(call.outputs[0])}:
            shape = tuple(call.outputs[0].shape)
            cuts.append(CutPoint(operation.name, depth, shape, position))
    return cuts, calls


VIEWS = ("all", "blocks")
CONTAINER_WORDS = ("block", "stage", "xblock", "yblock", "zblock", "cell", "stack")
"""Name parts that nest a block inside a stage: ``conv2_block1``, ``stage_0_block_0``, ``Stage_0_XBlock_0``."""


def is_auto_named(operation) -> bool:
    """Whether an operation has a name Keras made up from its class (`activation_17`, `add`).

    Such names are numbered per process, so they name no block.

    Example:
        >>> is_auto_named(keras.layers.ReLU(name="re_lu_3")), is_auto_named(keras.layers.ReLU(name="block1_relu"))
        (True, False)
    """
    snake = re.sub(r"\W+", "", type(operation).__name__)
    snake = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", snake)).lower()
    return re.fullmatch(rf"{re.escape(snake)}(_\d+)?", operation.name) is not None


def block_name(layer_name: str) -> str:
    """The block a layer's name puts it in: the name up to its block number.

    The first part holding a digit ends the name of the block (and starts
    it, if it is a numbered word such as `Conv1`), extended by nested block
    parts (`block1`, `stage_0`, `block_0`); a name without a digit is its
    own first word (`stem_conv` -> `stem`).

    Example:
        >>> [block_name(n) for n in ("expanded_conv_3_expand_bn", "block4a_se_excite", "conv2_block1_1_conv",
        ...                          "convnext_tiny_stage_0_block_1_pointwise_conv_1", "stem_bn", "bn_Conv1")]
        ['expanded_conv_3', 'block4a', 'conv2_block1', 'convnext_tiny_stage_0_block_1', 'stem', 'Conv1']
    """
    tokens = layer_name.split("_")
    end = next((i for i, token in enumerate(tokens) if any(ch.isdigit() for ch in token)), None)
    if end is None:
        return tokens[0]
    if not tokens[end].isdigit():  # a numbered word (`bn_Conv1`) starts the block's name
        tokens = tokens[end:]
        end = 0
    i = end + 1
    while i < len(tokens):
        part = re.fullmatch(rf"({'|'.join(CONTAINER_WORDS)})(\d*[a-z]?)", tokens[i].lower())
        if part and part.group(2):
            end, i = i, i + 1
        elif part and i + 1 < len(tokens) and tokens[i + 1].isdigit():
            end, i = i + 1, i + 2
        else:
            break
    return "_".join(tokens[: end + 1])


def _blocks(cuts: list[CutPoint], calls: list[graph.Call]) -> list[CutPoint]:
    """The last cut of each block: cuts grouped by the block name of their segment's last named layer."""
    groups = []  # [block name or None, last cut]
    previous = -1
    for cut in cuts:
        segment = calls[previous + 1 : cut.position + 1]
        previous = cut.position
        if cut.depth == 0 or cut.position == len(calls) - 1:
            continue  # keeps nothing, or everything
        named = [call.operation.name for call in segment if not is_auto_named(call.operation)]
        block = block_name(named[-1]) if named else None
        last = groups[-1] if groups else None
        # A segment of auto-named layers without weights (an activation, a Keras-named add) joins the
        # block before it, unless it changes the rank (a pooling that ends the blocks); one with weights
        # (`conv2d_3`, a residual block of Keras-named layers) starts a block.
        weighted = any(weighted_layer_count(call.operation) for call in segment)
        same = last is not None and (
            block == last[0] if block is not None
            else not weighted and len(cut.output_shape) == len(last[1].output_shape)
        )
        if same:
            last[1] = cut
        else:
            groups.append([block, cut])
    taken = {call.operation.name for call in calls}
    view = []
    for block, cut in groups:
        alias = f"{block}_out"
        operation = calls[cut.position].operation
        if block is not None and is_auto_named(operation) and alias not in taken:
            taken.add(alias)
            cut = dataclasses.replace(cut, name=alias)
        view.append(cut)
    return view


def cut_points(model: keras.Model, view: str = "all") -> list[CutPoint]:
    """The valid cuts of a Sequential or functional model, in order.

    Args:
        model: a built `keras.Model` with a layer graph; `keras.ops` calls
            between layers are part of the graph (and may be cuts).
        view: "all", every cut; or "blocks", the output of each block of
            the architecture: the last cut of each run of cuts whose layers
            share a block name (`expanded_conv_5_*`, `block4c_*`, see
            `block_name`), leaving out cuts that keep nothing (`rescaling`)
            or everything (the output). Between Keras-named layers, each
            cut's segment with a weighted layer starts a block, and the
            weightless segments after it (`activation_3`) end it. A block
            whose output Keras named (`activation_17`, `add_9`) is named
            `<block>_out`; `resolve_cut` takes that name too.

    Returns:
        A list of `CutPoint(name, depth, output_shape, position)`. A layer
        called twice may appear twice, with different positions.

    Example:
        >>> import keras_team
        >>> cuts = keras_team.cut_points(keras_team.zoo.residual_cnn((8, 8, 1), 5))
        >>> [c.name for c in cuts if c.name.startswith("block1")]
        ['block1_add', 'block1_out']
        >>> [c.name for c in keras_team.cut_points(keras_team.zoo.residual_cnn((8, 8, 1), 5), view="blocks")]
        ['stem_relu', 'block1_out', 'pool1', 'block2_out', 'avg_pool']
    """
    if view not in VIEWS:
        raise KerasTeamError("view", view, f"one of {', '.join(VIEWS)}")
    cuts, calls = _all_cuts(model)
    return cuts if view == "all" else _blocks(cuts, calls)


def same_weights(cuts: list[CutPoint]) -> list[list[CutPoint]]:
    """`cuts` (in order) grouped into runs that keep the same weighted layers: no weighted layer between them.

    A search tries one cut per group, the last (`keras-team cuts` lists it with the others' names):
    a block's last normalization, its activation and the pooling after it train the same weights.

    Example:
        >>> import keras_team
        >>> blocks = cut_points(keras_team.zoo.seed_cnn((8, 8, 1), 5), view="blocks")
        >>> [[c.name for c in group] for group in same_weights(blocks)]
        [['conv1', 'pool1'], ['conv2', 'pool2', 'flatten'], ['fc1'], ['fc2']]
    """
    groups = []
    for cut in cuts:
        if groups and groups[-1][-1].depth == cut.depth:
            groups[-1].append(cut)
        else:
            groups.append([cut])
    return groups


def default_cut(model: keras.Model) -> CutPoint:
    """The middle block output (rounded down): a default cut for an architecture, not chosen on any data.

    Example:
        >>> import keras_team
        >>> default_cut(keras_team.zoo.residual_cnn((8, 8, 1), 5)).name
        'pool1'
    """
    blocks = cut_points(model, view="blocks")
    if not blocks:
        raise KerasTeamError("leader", model.name, "a model with a cut point that keeps a weighted layer and is not its output")
    return blocks[(len(blocks) - 1) // 2]


def resolve_cut(model: keras.Model, keep: int | str | CutPoint) -> CutPoint:
    """The cut that `keep` names: a weighted-layer depth, a layer name or a `CutPoint`.

    For a depth N the cut is the last cut point before weighted layer N + 1,
    so pooling, flatten and activation layers after layer N are kept. A name
    is a cut's layer name or a block output's name (`cut_points(model,
    view="blocks")`), and must name one cut: for a layer called at two cut points, pass the
    `CutPoint` itself (from `cut_points(model)`).

    Example:
        >>> import keras_team
        >>> resolve_cut(keras_team.zoo.seed_cnn((8, 8, 1), 5), 2).name
        'flatten'
    """
    cuts, calls = _all_cuts(model)
    blocks = _blocks(cuts, calls)
    if isinstance(keep, CutPoint):
        if keep not in cuts and keep not in blocks:
            raise KerasTeamError("keep", keep, f"a CutPoint of {model.name!r} from keras_team.cut_points(model)")
        return keep
    if isinstance(keep, str):
        named = [c for c in cuts if c.name == keep] or [c for c in blocks if c.name == keep]
        if not named:
            names = ", ".join(dict.fromkeys(c.name for c in blocks))
            raise KerasTeamError("keep", keep, f"a cut point of {model.name!r}: a block output ({names}) "
                                 f"or the name of any of its {len(cuts)} cuts (keras_team.cut_points(model))")
        if len(named) > 1:
            options = ", ".join(f"keras_team.cut_points(model)[{cuts.index(c)}] (depth {c.depth})" for c in named)
            raise KerasTeamError(
                "keep",
                keep,
                f"one cut: {keep!r} is called at {len(named)} cut points of {model.name!r}; pass one of {options}",
            )
        return named[0]
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral):
        raise KerasTeamError("keep", keep, "an int depth, a layer name or a CutPoint")
    at_depth = [c for c in cuts if c.depth == keep and keep >= 1]
    if not at_depth:
        depths = sorted({c.depth for c in cuts if c.depth >= 1})
        raise KerasTeamError(
            "keep", keep, f"a weighted-layer depth at a cut point of {model.name!r}: {', '.join(map(str, depths))}"
        )
    return at_depth[-1]
