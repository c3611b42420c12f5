"""unfreeze(unit="blocks") trains whole architectural blocks, checked against the architectures' layer names."""

import re

import keras
import pytest

import keras_team
from keras_team.cuts import normalization_kind, weighted_layer_count
from keras_team.errors import KerasTeamError
from keras_team.freezing import is_trained, units

RESIDUAL_CNN = r"(stem|block\d+)_|(logits)$"
RESNET = r"(conv1|conv\d_block\d+)_"
MOBILENET_V3 = r"(expanded_conv(?:_\d+)?|conv|conv_1)(?:_|$)"  # `expanded_conv_depthwise` is the first block's


def _frozen_part(model):
    return model.body if isinstance(model, keras_team.Transferred) else model


def _counted(layer):  # a weighted layer that unfreeze trains by default (batch norm stays frozen)
    return weighted_layer_count(layer) and normalization_kind(layer) is None


def _reference_blocks(model, pattern):
    """The (block, weighted layer names) of the frozen part, bottom up, read from Keras' names with `pattern`."""
    names = {}
    for layer in units(keras_team.freeze(_frozen_part(model))):
        if _counted(layer):
            match = re.match(pattern, layer.name)
            assert match, f"{layer.name} is in no block of {pattern}"
            names.setdefault(next(g for g in match.groups() if g), []).append(layer.name)
    return list(names.items())


def _unfrozen_by_blocks(model, top):
    keras_team.freeze(_frozen_part(model))
    keras_team.unfreeze(model, top=top, unit="blocks")
    return sorted(layer.name for layer in units(_frozen_part(model)) if is_trained(layer, model))


def _assert_top_blocks_unfrozen(model, pattern, tops):
    blocks = _reference_blocks(model, pattern)
    for top in tops:
        expected = sorted(name for _, names in blocks[len(blocks) - top:] for name in names)
        assert _unfrozen_by_blocks(model, top) == expected, (top, [block for block, _ in blocks[-top:]])
    keras_team.freeze(_frozen_part(model))
    with pytest.raises(KerasTeamError, match=f"an int from 0 to {len(blocks)} \\(the frozen blocks\\)"):
        keras_team.unfreeze(model, top=len(blocks) + 1, unit="blocks")


def test_residual_cnn_blocks_are_the_stem_and_the_residual_blocks():
    leader = keras_team.zoo.residual_cnn((8, 8, 1), 5)
    _assert_top_blocks_unfrozen(leader, RESIDUAL_CNN, tops=(1, 2, 3, 4))  # logits, block2, block1, stem


def _keras_named_residual_net():
    """A small ResNet whose layers keep Keras' own names (`conv2d_3`, `add_1`), and its blocks' layers."""
    blocks = {}
    inputs = keras.Input((8, 8, 3))
    stem = keras.layers.Conv2D(4, 3, padding="same")
    x = keras.layers.ReLU()(stem(inputs))
    blocks["stem"] = [stem]
    for index, width in enumerate((4, 8), start=1):
        first, second = keras.layers.Conv2D(width, 3, padding="same"), keras.layers.Conv2D(width, 3, padding="same")
        y = second(keras.layers.ReLU()(first(x)))
        shortcut = keras.layers.Conv2D(width, 1) if width != x.shape[-1] else None
        x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut(x) if shortcut else x]))
        blocks[f"block{index}"] = [first, second] + ([shortcut] if shortcut else [])
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x)))
    blocks["top"] = [dense]
    return model, [[layer.name for layer in layers] for layers in blocks.values()]


def test_keras_named_residual_blocks_are_blocks():
    model, blocks = _keras_named_residual_net()
    assert len(keras_team.cut_points(model, view="blocks")) == 4  # stem, block1, block2, pooling
    for top in (1, 2, 3, 4):
        assert _unfrozen_by_blocks(model, top) == sorted(sum(blocks[4 - top:], []))


def test_a_nested_backbone_counts_its_own_blocks():
    backbone = keras_team.zoo.residual_cnn((8, 8, 1), 5)
    backbone = keras.Model(backbone.inputs, backbone.get_layer("block2_out").output, name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 1)), backbone, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, name="logits")])
    _assert_top_blocks_unfrozen(model, RESIDUAL_CNN, tops=(1, 2, 3))


@pytest.mark.large
@pytest.mark.parametrize("application, cut, pattern", [
    ("ResNet50", "conv4_block6_out", RESNET),
    ("MobileNetV3Small", "expanded_conv_2_add", MOBILENET_V3),  # down to the stem (`conv`)
])
def test_application_blocks_are_its_residual_blocks(application, cut, pattern):
    leader = keras_team.zoo.application(application, (32, 32, 3), 5)
    student = keras_team.transfer(leader, cut, keras_team.heads.dense(5))
    tops = (1, 2, 3) if application == "ResNet50" else (1, 2, 3, 4)
    _assert_top_blocks_unfrozen(student, pattern, tops)


@pytest.mark.large
def test_a_nested_application_counts_its_own_blocks():
    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False)
    leader = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.GlobalAveragePooling2D(name="gap"),
                               keras.layers.Dense(5, name="out")])
    student = keras_team.transfer(leader, "gap", keras_team.heads.dense(3))
    assert _unfrozen_by_blocks(student, 1) == ["conv_1"]
    assert _unfrozen_by_blocks(student, 2) == sorted(
        ["conv_1"] + [layer.name for layer in backbone.layers if layer.name.startswith("expanded_conv_10_")
                      and _counted(layer)]
    )
