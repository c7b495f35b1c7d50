"""Exact inference rewrites (synergyseg/models/rewrite.py) against the unrewritten models.

BatchNorm statistics are set to random values first, so a fold that drops or misplaces a term
(the mean, the epsilon, a depthwise channel order) moves the probabilities far past TOLERANCE.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras

import synergyseg
from synergyseg.models.names import FUSED, S_HI, S_LO, UNCERTAINTY
from synergyseg.models.rewrite import MaxInputSize, drop_padding_taps, fold_batchnorm, rewrite_for_inference
from reference import all_layers, assert_save_load_round_trip

NUM_CLASSES = 5
# On probabilities. The rewrites re-associate sums, so they differ from the model by float32
# rounding, whose size depends on the kernels the CPU gets: at most ~1e-6 on an AVX2 CPU, 1.3e-5
# (s_hi, 46 of 206885 values past 1e-5) on an AVX-512 one (oneDNN), in
# test_rewritten_dilated_convs_are_tap_convs_and_plain_ones_stay. One tap of a TapConv2D padded
# on the wrong side moves the same outputs by 0.38-0.92: a wrong rewrite is 4 orders past this.
TOLERANCE = 5e-5


def randomize_batchnorm(model, seed, sizes=((48, 64), (161, 257))):
    """Random BatchNorm statistics at a trained model's scale: the mean of the statistics of a
    training-mode pass at each of `sizes` on random images of random brightness (variances of at
    least 0.1, as a channel that never varies on noise would divide rounding by ~0), then the mean
    moved by up to a standard deviation, the variance scaled by 0.5-2, random gamma and beta.
    Activations stay of order 1, as in a trained model (logits within ~30 of each other), so
    float32 rounding stays below the tolerance and a wrong fold does not."""
    rng = np.random.default_rng(seed)
    norms = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for i, size in enumerate(sizes):
        for layer in norms:
            layer.momentum = i / (i + 1)  # a running mean over the passes
        brightness = rng.uniform(0.2, 1.0, (4, 1, 1, 1)).astype("float32")
        model(images(4, *size, seed=seed + i) * brightness, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
        n = layer.moving_mean.shape[0]
        variance = np.maximum(np.asarray(layer.moving_variance), 0.1)
        layer.moving_mean.assign(np.asarray(layer.moving_mean) + rng.normal(0.0, 0.5, n) * np.sqrt(variance))
        layer.moving_variance.assign(variance * rng.uniform(0.5, 2.0, n))
        if layer.scale:
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
        if layer.center:
            layer.beta.assign(rng.normal(0.0, 0.5, n))
    return model


@pytest.fixture(scope="module")
def deeplab():
    """ResNet-18 width 16 DeepLabV3+ at output stride 16: ASPP rates 6, 12, 18; conv5 dilated 2."""
    keras.utils.set_random_seed(21)
    model = synergyseg.build_synergyseg(NUM_CLASSES, backbone="resnet18", backbone_width=16, head_filters=16,
                                        low_level_filters=8, scale_outputs=True)
    return randomize_batchnorm(model, 1)


@pytest.fixture(scope="module")
def lraspp():
    keras.utils.set_random_seed(22)
    model = synergyseg.build_synergyseg(NUM_CLASSES, backbone="mobilenetv3_small", head="lraspp", head_filters=8,
                                        fuse_at="decoder", scale_outputs=True)
    return randomize_batchnorm(model, 2)


def images(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def assert_same_outputs(rewritten, model, x):
    got, expected = rewritten(x), model(x)
    assert set(got) == set(expected) == {FUSED, S_LO, S_HI, UNCERTAINTY}
    for key in expected:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(expected[key]), atol=TOLERANCE, err_msg=key)


def count(model, kind):
    return sum(isinstance(layer, kind) for layer in all_layers(model))


def aspp_kernels(submodel):
    return {rate: submodel.get_layer(f"aspp_rate{rate}_conv").kernel_size for rate in (6, 12, 18)}


@pytest.mark.parametrize("fixture", ["deeplab", "lraspp"])
@pytest.mark.parametrize("height,width", [(67, 93), (33, 47)])
def test_folded_batchnorm_gives_the_same_probabilities(request, fixture, height, width):
    model = request.getfixturevalue(fixture)
    folded = fold_batchnorm(model)
    assert_same_outputs(folded, model, images(2, height, width, seed=height))
    # Every BatchNorm of these models follows a conv that nothing else reads: none is left.
    assert count(model, keras.layers.BatchNormalization) > 20
    assert count(folded, keras.layers.BatchNormalization) == 0
    assert count(folded, keras.layers.Conv2D) == count(model, keras.layers.Conv2D)
    # Nested as before: two-scale model -> submodel -> trunk, names kept.
    submodel = [layer for layer in folded.layers if isinstance(layer, keras.Model)][0]
    assert submodel.get_layer("backbone").name == "backbone"


def test_folded_model_saves_and_loads_with_safe_mode(deeplab, tmp_path):
    folded = fold_batchnorm(deeplab)
    assert_save_load_round_trip(folded, images(1, 33, 47), str(tmp_path / "folded.keras"))


def test_dilated_aspp_branches_keep_the_centre_tap_on_small_maps(deeplab, tmp_path):
    # 67x93: a 5x6 map at stride 16 (a 3x3 one on the half-resolution scale), no larger than
    # rate 6: every ASPP branch reads only its centre tap; conv5's rate 2 is smaller than the map.
    x = images(2, 67, 93, seed=3)
    rewritten = drop_padding_taps(deeplab, (67, 93))
    assert_same_outputs(rewritten, deeplab, x)
    submodels = [layer for layer in rewritten.layers if isinstance(layer, keras.Model)]
    assert len(submodels) == 1  # both scales drop the same taps: one shared submodel, as before
    assert aspp_kernels(submodels[0]) == {6: (1, 1), 12: (1, 1), 18: (1, 1)}
    assert submodels[0].get_layer("aspp_rate6_conv").dilation_rate == (1, 1)
    assert submodels[0].get_layer("backbone").get_layer("conv5_block2_2_conv").kernel_size == (3, 3)
    assert count(rewritten, keras.layers.BatchNormalization) == count(deeplab, keras.layers.BatchNormalization)
    # Exact on smaller inputs too; a larger one is refused.
    assert_same_outputs(rewritten, deeplab, images(1, 40, 93, seed=4))
    with pytest.raises(ValueError, match=r"at most 67x93.*got 68x93"):
        rewritten(images(1, 68, 93))
    assert_save_load_round_trip(rewritten, x[:1], str(tmp_path / "taps.keras"))


def test_each_scale_drops_the_taps_its_own_map_allows(deeplab):
    # 161x257: an 11x17 map at stride 16, 6x9 at half resolution. Rows no larger than the rate
    # keep the centre row (1x3), maps no larger than it along both axes the centre tap (1x1).
    x = images(1, 161, 257, seed=5)
    rewritten = rewrite_for_inference(deeplab, (161, 257))
    assert_same_outputs(rewritten, deeplab, x)
    kernels = sorted((aspp_kernels(layer) for layer in rewritten.layers if isinstance(layer, keras.Model)),
                     key=str)
    high = {6: (3, 3), 12: (1, 3), 18: (1, 1)}  # 11x17
    low = {6: (1, 3), 12: (1, 1), 18: (1, 1)}  # 6x9
    assert kernels == sorted([high, low], key=str)
    assert count(rewritten, keras.layers.BatchNormalization) == 0


def test_lraspp_decoder_fused_drops_taps_of_its_dilated_depthwise_convs(lraspp):
    x = images(2, 33, 47, seed=6)
    rewritten = rewrite_for_inference(lraspp, (33, 47))
    assert_same_outputs(rewritten, lraspp, x)
    depthwise = lambda m: sorted(layer.kernel_size for layer in all_layers(m)
                                 if isinstance(layer, keras.layers.DepthwiseConv2D))
    assert sum(k[0] * k[1] for k in depthwise(rewritten)) < sum(k[0] * k[1] for k in depthwise(lraspp))
    assert count(rewritten, keras.layers.BatchNormalization) == 0


def test_each_layer_keeps_its_dtype_policy():
    keras.utils.set_random_seed(25)
    model = randomize_batchnorm(synergyseg.DeepLabV3Plus(NUM_CLASSES, backbone="resnet18", backbone_width=8,
                                                         head_filters=16, low_level_filters=8,
                                                         dtype="mixed_float16"), 4, sizes=[(33, 47)])
    rewritten = rewrite_for_inference(model, (33, 47))
    policies = lambda m: {layer.name: layer.dtype_policy.name for layer in all_layers(m)
                          if not isinstance(layer, (keras.layers.BatchNormalization, keras.layers.InputLayer,
                                                    MaxInputSize))}
    assert policies(rewritten) == policies(model)
    assert policies(model)["aspp_rate6_conv"] == "mixed_float16" and policies(model)["probabilities"] == "float32"
    assert rewritten.dtype_policy.name == model.dtype_policy.name
    x = images(1, 33, 47, seed=9)
    out = rewritten(x)
    assert out.dtype == "float32"
    # float16 convs round the folded kernel once more (~1e-3 relative), which near-ties amplify:
    # the same function at float16 precision, not to 1e-5.
    got, expected = np.asarray(out), np.asarray(model(x))
    assert np.abs(got - expected).mean() < 1e-3
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) > 0.99


def test_a_dynamic_size_larger_than_the_rewrite_is_refused_in_the_graph(deeplab):
    rewritten = drop_padding_taps(deeplab.submodel, (33, 47))
    run = tf.function(lambda x: rewritten(x), input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    np.testing.assert_allclose(np.asarray(run(images(1, 33, 47))), np.asarray(deeplab.submodel(images(1, 33, 47))),
                               atol=TOLERANCE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 33x47"):
        run(images(1, 33, 48))


def small_graph():
    """Conv -> BN pairs of every conv kind, a BN whose conv output is read twice, a BN after an add."""
    image = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", dilation_rate=4, name="conv_bias")(image)
    a = keras.layers.BatchNormalization(center=False, name="bn_no_beta")(a)
    b = keras.layers.DepthwiseConv2D(5, padding="same", dilation_rate=2, depth_multiplier=2, use_bias=False,
                                     name="depthwise")(a)
    b = keras.layers.BatchNormalization(scale=False, name="bn_no_gamma")(b)
    c = keras.layers.SeparableConv2D(4, 3, padding="same", dilation_rate=3, name="separable")(b)
    c = keras.layers.BatchNormalization(epsilon=0.1, name="bn_separable")(c)
    shared = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_read_twice")(c)
    d = keras.layers.BatchNormalization(name="bn_kept")(shared)
    e = keras.layers.Add(name="add")([d, shared])
    e = keras.layers.BatchNormalization(name="bn_after_add")(e)
    f = keras.layers.Conv2D(3, 3, strides=2, padding="same", name="strided")(e)
    f = keras.layers.BatchNormalization(name="bn_strided")(f)
    return randomize_batchnorm(keras.Model(image, f), 3, sizes=[(9, 9)])


def test_folding_leaves_a_batchnorm_whose_conv_output_has_another_reader():
    keras.utils.set_random_seed(23)
    model = small_graph()
    x = images(2, 19, 23, seed=7)
    folded = fold_batchnorm(model)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), atol=TOLERANCE)
    kept = sorted(layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert kept == ["bn_after_add", "bn_kept"]
    assert not folded.get_layer("conv_read_twice").use_bias
    assert folded.get_layer("depthwise").use_bias and folded.get_layer("strided").use_bias


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
def test_dropped_taps_at_each_map_size(size):
    """On an n x n map a rate-4 3x3 conv keeps its centre for n <= 4; the rate-2 5x5 depthwise
    conv reads taps within n - 1 of the centre (in steps of 2); a stride-2 3x3 conv ("same": one
    pixel of padding before on an odd map, none on an even one) reads its centre on one pixel and
    its first two taps on two."""
    keras.utils.set_random_seed(24)
    model = small_graph()
    x = images(1, size, size, seed=size)
    rewritten = rewrite_for_inference(model, (size, size))
    np.testing.assert_allclose(np.asarray(rewritten(x)), np.asarray(model(x)), atol=TOLERANCE)
    assert rewritten.get_layer("conv_bias").kernel_size == ((1, 1) if size <= 4 else (3, 3))
    live = 2 * min((size - 1) // 2, 2) + 1  # taps at offsets -4, -2, 0, 2, 4 that land on the map
    assert rewritten.get_layer("depthwise").kernel_size == (live, live)
    assert rewritten.get_layer("separable").kernel_size == ((1, 1) if size <= 3 else (3, 3))
    assert rewritten.get_layer("strided").kernel_size == {1: (1, 1), 2: (2, 2)}.get(size, (3, 3))


def test_bad_arguments_are_refused(deeplab):
    gated = synergyseg.gated_synergyseg(deeplab.with_fusion(), fraction=1.0, pooling="tile")
    with pytest.raises(ValueError, match="functional Keras model.*GatedSynergySeg.*submodel"):
        fold_batchnorm(gated)
    for size in [(0, 10), (10,), "64x64", (10.0, 10)]:
        with pytest.raises(ValueError, match="input_size must be"):
            drop_padding_taps(deeplab, size)
    assert isinstance(MaxInputSize.from_config(MaxInputSize(3, 4).get_config()), MaxInputSize)


@pytest.mark.parametrize("kernel, dilation, size", [((3, 3), (2, 2), (9, 13)), ((3, 3), (18, 18), (32, 64)),
                                                     ((3, 3), (6, 12), (5, 7)), ((1, 3), (1, 4), (6, 11)),
                                                     ((3, 1), (3, 1), (10, 4)), ((2, 2), (3, 3), (7, 8))])
def test_tap_conv_equals_the_dilated_conv_it_replaces(kernel, dilation, size):
    # Against TensorFlow's own dilated conv (SpaceToBatchND), with a bias and a ReLU; the even
    # kernel checks the "same" padding split (less before than after).
    from synergyseg.models.rewrite import TapConv2D

    conv = keras.layers.Conv2D(7, kernel, dilation_rate=dilation, padding="same", activation="relu")
    x = images(2, *size, seed=5) / 255.0
    conv.build(x.shape)
    conv.bias.assign(np.random.default_rng(1).normal(size=7).astype("float32"))
    expected = np.asarray(conv(x))
    taps = TapConv2D(7, kernel, dilation, activation="relu")
    taps.build(x.shape)
    taps.kernel.assign(TapConv2D.kernel_from_conv(np.asarray(conv.kernel)))
    taps.bias.assign(np.asarray(conv.bias))
    np.testing.assert_allclose(np.asarray(taps(x)), expected, atol=1e-5)
    assert expected.max() > 0.1 and (expected == 0).any()  # the ReLU cut some, kept some


def test_rewritten_dilated_convs_are_tap_convs_and_plain_ones_stay(deeplab, tmp_path):
    from synergyseg.models.rewrite import TapConv2D

    rewritten = rewrite_for_inference(deeplab)
    sub = next(layer for layer in rewritten.layers if isinstance(layer, keras.Model))
    for rate in (6, 12, 18):
        assert isinstance(sub.get_layer(f"aspp_rate{rate}_conv"), TapConv2D)
    assert isinstance(sub.get_layer("backbone").get_layer("conv5_block2_2_conv"), TapConv2D)  # rate 2
    assert type(sub.get_layer("backbone").get_layer("conv4_block2_2_conv")) is keras.layers.Conv2D
    assert not any(isinstance(layer, TapConv2D) for layer in all_layers(fold_batchnorm(deeplab)))
    assert_same_outputs(rewritten, deeplab, images(1, 161, 257, seed=6))
    assert_save_load_round_trip(rewritten, images(1, 33, 47), str(tmp_path / "tap.keras"))
