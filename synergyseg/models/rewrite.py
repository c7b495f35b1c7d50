"""Exact rewrites of a trained model for inference: BatchNorm folded into its conv, conv taps that
read nothing but padding at a given input size dropped, dilated convs as one matmul of their taps.

Each returns a new functional model (weights copied, the original untouched) that computes the same
function in inference mode, up to float32 rounding:

- `fold_batchnorm(model)`: every BatchNormalization whose input is a conv's output that nothing
  else reads (Conv2D, DepthwiseConv2D, or SeparableConv2D's pointwise part) is folded into that
  conv's kernel and bias, `gamma * (conv(x) - mean) / sqrt(var + eps) + beta`, and leaves the graph.
  Valid at every input size; the folded model has no BatchNorm to train (inference only).
- `drop_padding_taps(model, input_size)`: at a fixed input size every conv's input map has a known
  size; a tap that reads zero padding at every output position adds nothing, so a conv keeps only
  its taps that can read the map. A 3x3 conv with dilation r on a map no larger than r along an
  axis keeps its centre tap there (a 1x3, 3x1 or 1x1 conv, the same stride and "same" padding):
  ASPP's rate-12 and rate-18 branches at output stride 16 on a 160-px tile (a 10x10 map), or on
  the half-resolution scale of a small image. A smaller map only loses more taps, so the result is
  exact for every input no larger than `input_size` along each axis; a larger one is refused
  (`MaxInputSize`). A shared submodel called at two sizes (SynergySeg's two scales) gets one
  copy per call whose convs lose different taps.
- `rewrite_for_inference(model, input_size=None)`: both in one pass, and every dilated stride-1
  Conv2D (ASPP's rate 6/12/18 branches, a dilated trunk's last stage) as a `TapConv2D`: one 1x1
  conv for all its taps and shifted sums, instead of TensorFlow's SpaceToBatchND route, which on
  the CPU computes the map padded to a multiple of the rate (rate 18 on a 32x64 map: 3.8x the
  pixels) at a fraction of the matmul rate.

Nested functional models (SynergySeg -> DeepLabV3Plus or LRASPP -> trunk) are rewritten inside
and stay nested, with their names; a model of another class comes back as a plain functional model
(`keras.Model(inputs, outputs)`: no `class_names`, `fuse_at`, `compile` recipe) made of the same
registered layers, so it saves and loads with `safe_mode=True`. Each layer keeps its dtype policy.
The rewrite reads the model's graph (`_nodes_by_depth`), as `keras.models.clone_model` does.

    fast = rewrite_for_inference(model)                   # any size: BatchNorm folded
    tile = rewrite_for_inference(model.submodel, (160, 160))  # tiles up to 160x160 (gated inference)
"""

import collections

import keras
import numpy as np
from keras import layers, ops
from keras.src.models.functional import Functional

from synergyseg.models.submodel import building_policy

# The convs whose output BatchNorm folds into and whose taps can be dropped.
CONVS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)


@keras.saving.register_keras_serializable(package="synergyseg")
class MaxInputSize(keras.layers.Layer):
    """Passes images through unchanged, refusing any larger than `(height, width)`.

    Guards a model rewritten for one input size (`drop_padding_taps`), exact only up to it. A
    known (static) size is checked when the graph is built, raising ValueError; a dynamic one by an
    assertion in the graph (TensorFlow's InvalidArgumentError when it runs).
    """

    def __init__(self, height, width, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)

    def call(self, images):
        size = tuple(images.shape[1:3])
        message = (f"{self.name}: this model was rewritten for inputs of at most {self.height}x{self.width} "
                   f"(height x width; drop_padding_taps), and is not exact on larger ones")
        if all(isinstance(n, int) for n in size):
            if size[0] > self.height or size[1] > self.width:
                raise ValueError(f"{message}; got {size[0]}x{size[1]}: rewrite it for that size")
            return images
        import tensorflow as tf  # a dynamic size: an assertion in the graph (TensorFlow backend)

        check = tf.debugging.assert_less_equal(tf.shape(images)[1:3], tf.constant([self.height, self.width]),
                                               message=message)
        with tf.control_dependencies([check]):
            return tf.identity(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


@keras.saving.register_keras_serializable(package="synergyseg")
class TapConv2D(keras.layers.Layer):
    """A dilated stride-1 "same" conv computed as one 1x1 conv and shifted sums of its taps.

    `y[o] = sum_t z_t[o + offset_t]`, `z = x @ [K_1 ... K_T]` (every tap's product in one matmul),
    zero outside the map: the same function as `Conv2D(filters, kernel_size, dilation_rate=...,
    padding="same")` with the kernel `kernel.reshape(cin, kh, kw, filters)`. TensorFlow's CPU
    conv runs a dilated conv on a map padded to a multiple of the rate (SpaceToBatchND): ASPP's
    rate-18 conv on a 32x64 map computes 3.8x its pixels at a quarter of the matmul rate; here it
    is one matmul of its nominal FLOPs and T cheap adds.

    Args:
        filters, kernel_size, dilation_rate, activation: as in `Conv2D` (stride 1, "same").
        use_bias: add a bias after the sum.
    Weights: `kernel` `(cin, kh * kw * filters)` (tap `i * kw + j` in block `i * kw + j`), `bias`.
    """

    def __init__(self, filters, kernel_size, dilation_rate, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.dilation_rate = tuple(int(d) for d in dilation_rate)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], taps * self.filters))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    @staticmethod
    def kernel_from_conv(kernel):
        """The `kernel` weight of a `(kh, kw, cin, cout)` conv kernel."""
        kh, kw, cin, cout = kernel.shape
        return np.transpose(np.asarray(kernel), (2, 0, 1, 3)).reshape(cin, kh * kw * cout)

    def call(self, x):
        (kh, kw), (dh, dw), c = self.kernel_size, self.dilation_rate, self.filters
        kernel = ops.cast(self.kernel, self.compute_dtype)
        z = ops.conv(x, ops.reshape(kernel, (1, 1) + tuple(kernel.shape)), padding="valid")
        # TensorFlow's "same" at stride 1: (k - 1) * d padding in all, half of it (floor) before,
        # so tap (i, j) of output (y, x) reads input (y + i * dh - top, x + j * dw - left).
        top, left = (kh - 1) * dh // 2, (kw - 1) * dw // 2
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]

        def window(offset, size):
            """(start in z, length, zeros before, zeros after) of one axis for a tap at `offset`:
            only the part of the map it reads is cut out and padded (not all of z)."""
            if offset == 0:
                return 0, size, 0, 0
            length = ops.maximum(size - abs(offset), 0)
            before = ops.minimum(max(-offset, 0), size)
            return ops.minimum(max(offset, 0), size), length, before, size - length - before

        y = None
        for i in range(kh):
            for j in range(kw):
                (y0, rows, up, down), (x0, cols, lf, rt) = window(i * dh - top, height), window(j * dw - left, width)
                tap = ops.slice(z, [0, y0, x0, (i * kw + j) * c], [batch, rows, cols, c])
                if (i * dh - top, j * dw - left) != (0, 0):
                    tap = ops.pad(tap, [[0, 0], [up, down], [lf, rt], [0, 0]])
                y = tap if y is None else y + tap
        if self.use_bias:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


def _as_taps(conv, config):
    """True when the conv (after any dropped taps, `config`) is a dilated stride-1 "same" Conv2D
    that `TapConv2D` computes."""
    return (type(conv) is layers.Conv2D and config.get("groups", 1) == 1 and config["padding"] == "same"
            and tuple(config["strides"]) == (1, 1) and conv.data_format == "channels_last"
            and any(d > 1 and k > 1 for d, k in zip(config["dilation_rate"], config["kernel_size"])))


def fold_batchnorm(model):
    """`model` with every BatchNorm that follows a conv (its only reader) folded into the conv.

    Exact in inference mode at every input size (float32: to about 1e-6 of the probabilities;
    under a float16 policy the folded kernel is rounded once more). See the module docstring.
    """
    return _Rewriter(fold=True, input_size=None).rewrite(model)


def drop_padding_taps(model, input_size):
    """`model` rewritten for inputs of at most `input_size = (height, width)`: each conv keeps only
    the taps that read its input map at that size (see the module docstring).

    The result refuses a larger input (`MaxInputSize`, when some conv lost taps): it is a
    per-size model, for a fixed export size or gated inference's tiles.
    """
    return _Rewriter(fold=False, input_size=input_size).rewrite(model)


def rewrite_for_inference(model, input_size=None):
    """`fold_batchnorm`, `drop_padding_taps` when `input_size` is given, and each dilated
    stride-1 conv as a `TapConv2D`, in one pass."""
    return _Rewriter(fold=True, input_size=input_size, dilated_as_taps=True).rewrite(model)


def kept_taps(size, kernel, stride, dilation, padding):
    """`(first, last)` taps of one axis of a conv that read its input somewhere, or None for all.

    `size` is the input's length along the axis (None: unknown, all taps kept). With "same"
    padding (TensorFlow's: `pad_total // 2` before) tap `i` of output `o` reads
    `o * stride - before + i * dilation`; taps outside `[first, last]` read only padding. The
    range is returned only where a conv of its taps, with the same stride and "same" padding,
    reads the same positions (so the rewrite is exact), and it is shorter than the kernel.
    """
    if size is None or padding != "same" or kernel == 1:
        return None
    out = -(-size // stride)

    def before(k, d):
        return max((out - 1) * stride + (k - 1) * d + 1 - size, 0) // 2

    offset = before(kernel, dilation)
    live = [i for i in range(kernel)
            if any(0 <= o * stride - offset + i * dilation < size for o in range(out))]
    first, last = live[0], live[-1]
    taps = last - first + 1
    if taps == kernel or before(taps, dilation if taps > 1 else 1) != offset - first * dilation:
        return None
    return first, last


def _axis_taps(conv, shape):
    """`((first, last), (first, last))` of rows and columns a conv keeps on a `shape` input, or None."""
    if conv.data_format != "channels_last" or len(shape) != 4:
        return None
    taps = [kept_taps(shape[1 + a], conv.kernel_size[a], conv.strides[a], conv.dilation_rate[a], conv.padding)
            for a in range(2)]
    if taps == [None, None]:
        return None
    return tuple(t if t is not None else (0, conv.kernel_size[a] - 1) for a, t in enumerate(taps))


def _foldable_pairs(model):
    """`{id(conv node): batchnorm layer}` and the ids of those BatchNorm nodes, in `model`'s own graph."""
    readers = collections.Counter(id(x) for x in model._outputs)
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth if not node.is_input]
    for node in nodes:
        readers.update(id(x) for x in node.input_tensors)
    own = {id(node) for node in nodes}
    pairs, folded = {}, set()
    for node in nodes:
        bn = node.operation
        if not isinstance(bn, layers.BatchNormalization) or len(node.input_tensors) != 1:
            continue
        if node.arguments.kwargs.get("training") or bn.axis not in (-1, 3):
            continue
        x = node.input_tensors[0]
        conv, index = x._keras_history.operation, x._keras_history.node_index
        if (not isinstance(conv, CONVS) or readers[id(x)] != 1 or len(x.shape) != 4
                or conv.data_format != "channels_last"
                or keras.activations.serialize(conv.activation) not in ("linear", None)):
            continue
        conv_node = conv._inbound_nodes[index]
        if id(conv_node) in own:
            pairs[id(conv_node)] = bn
            folded.add(id(node))
    return pairs, folded


def _folded_weights(conv, bn, taps):
    """The conv's weights (by attribute) after dropping taps outside `taps` and folding `bn`."""
    f64 = lambda v: np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)
    if isinstance(conv, layers.SeparableConv2D):
        weights = {"depthwise_kernel": f64(conv.depthwise_kernel), "pointwise_kernel": f64(conv.pointwise_kernel)}
        spatial, scaled = "depthwise_kernel", "pointwise_kernel"
    else:
        weights = {"kernel": f64(conv.kernel)}
        spatial = scaled = "kernel"
    if taps is not None:
        (r0, r1), (c0, c1) = taps
        weights[spatial] = weights[spatial][r0:r1 + 1, c0:c1 + 1]
    channels = weights[scaled].shape[-1] * (weights[scaled].shape[-2]
                                            if isinstance(conv, layers.DepthwiseConv2D) else 1)
    bias = f64(conv.bias) if conv.use_bias else np.zeros(channels)
    if bn is not None:
        gamma = f64(bn.gamma) if bn.scale else np.ones(channels)
        beta = f64(bn.beta) if bn.center else np.zeros(channels)
        scale = gamma / np.sqrt(f64(bn.moving_variance) + bn.epsilon)
        kernel = weights[scaled]
        # A depthwise kernel (kh, kw, in, multiplier) writes channel `c * multiplier + m`.
        weights[scaled] = kernel * scale.reshape(kernel.shape[-2:] if isinstance(conv, layers.DepthwiseConv2D)
                                                 else (-1,))
        bias = (bias - f64(bn.moving_mean)) * scale + beta
    if bn is not None or conv.use_bias:
        weights["bias"] = bias
    return weights


class _Rewriter:
    """One rewrite of one model: folds (if `fold`) and drops taps at `input_size` (if given).

    Two passes per functional model: a probe runs its graph on inputs of the fixed size (each
    layer's `compute_output_spec`, nothing built) and records the taps every conv keeps (the
    plan); the build then copies the graph with new layers. Copies are shared only within one
    parent model (a shared submodel called twice with the same plan stays one model), so the
    result saves and loads as it is.
    """

    def __init__(self, fold, input_size, dilated_as_taps=False):
        if input_size is not None:
            if (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_size)):
                raise ValueError(f"input_size must be (height, width), two positive integers, got {input_size!r}")
            input_size = tuple(input_size)
        self.fold = fold
        self.input_size = input_size
        self.dilated_as_taps = dilated_as_taps

    def rewrite(self, model):
        if not isinstance(model, Functional):
            raise ValueError(
                f"exact rewrites take a functional Keras model (SynergySeg, DeepLabV3Plus, LRASPP, "
                f"keras.Model(inputs, outputs)); got {type(model).__name__} {model.name!r}"
                + (": rewrite its submodel" if hasattr(model, "submodel") else ""))
        plan = {}
        limits = []
        if self.input_size is not None:
            probes = []
            for x in model._inputs:
                shape = tuple(x.shape)
                if len(shape) == 4 and shape[1] is None and shape[2] is None:
                    shape = (shape[0], *self.input_size, shape[3])
                    limits.append(True)
                else:
                    limits.append(False)
                probes.append(keras.KerasTensor(shape, dtype=x.dtype))
            _, plan = self._probe(model, probes)
        # Guard the image inputs when some conv lost taps (the model is exact only up to the size).
        return self._build(model, plan, guard=limits if plan and any(limits) else None)

    def _probe(self, model, inputs):
        """`(outputs, plan)`: `model`'s graph on symbolic `inputs`; plan `{id(node): taps or nested plan}`."""
        plan = {}

        def call(node, args, kwargs):
            op = node.operation
            if isinstance(op, Functional):
                outputs, inner = self._probe(op, keras.tree.flatten(args[0]))
                if inner:
                    plan[id(node)] = inner
                return outputs
            if isinstance(op, CONVS):
                taps = _axis_taps(op, tuple(args[0].shape))
                if taps is not None:
                    plan[id(node)] = taps
            return op.compute_output_spec(*args, **kwargs)

        return _walk(model, inputs, call), plan

    def _build(self, model, plan, guard=None, name=None):
        """A functional copy of `model` with its plan's taps dropped and (if `fold`) BatchNorm folded."""
        pairs, folded = _foldable_pairs(model) if self.fold else ({}, set())
        copies, names, pending = {}, set(), {}
        with building_policy(model.dtype_policy):
            inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name) for x in model._inputs]
            tensors = list(inputs)
            if guard:
                tensors = [MaxInputSize(*self.input_size, name=_unique("max_input_size", names))(x) if g else x
                           for x, g in zip(inputs, guard)]

            def call(node, args, kwargs):
                op = node.operation
                if id(node) in folded:
                    return args[0]  # the conv before it holds it now
                decision = plan.get(id(node))
                bn = pairs.get(id(node))
                key = (id(op), _frozen(decision), id(bn) if bn is not None else None)
                if key not in copies:
                    copies[key] = self._copy(op, decision, bn, names, pending)
                layer = copies[key]
                outputs = layer(*args, **kwargs)
                if id(layer) in pending:  # built by its first call: its weights now
                    pending.pop(id(layer))()
                return outputs

            outputs = _walk(model, keras.tree.pack_sequence_as(model._inputs_struct, tensors), call)
            return keras.Model(keras.tree.pack_sequence_as(model._inputs_struct, inputs), outputs,
                               name=name or model.name)

    def _copy(self, op, decision, bn, names, pending):
        """A new layer (or nested model) for `op`, named uniquely among its parent's layers; what
        sets its weights once it is built goes into `pending`."""
        name = _unique(op.name, names)
        if isinstance(op, Functional):
            return self._build(op, decision or {}, name=name)
        if not isinstance(op, keras.layers.Layer):
            return op  # a stateless keras.ops operation: called again as it is
        config = op.get_config()
        config["name"] = name
        if isinstance(op, CONVS):
            if decision is not None:
                (r0, r1), (c0, c1) = decision
                config["kernel_size"] = (r1 - r0 + 1, c1 - c0 + 1)
                config["dilation_rate"] = tuple(d if k > 1 else 1 for d, k in
                                                zip(op.dilation_rate, config["kernel_size"]))
            if bn is not None:
                config["use_bias"] = True
            as_taps = self.dilated_as_taps and _as_taps(op, config)
            if decision is not None or bn is not None or as_taps:
                return self._rewritten_conv(op, decision, bn, config, as_taps, pending)
        # Unchanged (a conv included): the same class and config, the weights as they are.
        layer = op.__class__.from_config(config)
        weights = op.get_weights()
        pending[id(layer)] = lambda: layer.set_weights(weights)
        return layer

    @staticmethod
    def _rewritten_conv(op, decision, bn, config, as_taps, pending):
        """The conv `op` with its dropped taps (`decision`), folded `bn` and/or as a `TapConv2D`."""
        weights = _folded_weights(op, bn, decision)
        if as_taps:
            layer = TapConv2D(config["filters"], config["kernel_size"], config["dilation_rate"],
                              activation=config["activation"], use_bias=config["use_bias"],
                              name=config["name"], dtype=op.dtype_policy)
            weights["kernel"] = TapConv2D.kernel_from_conv(weights["kernel"])
        else:
            layer = op.__class__.from_config(config)

        def assign():
            for attribute, value in weights.items():
                getattr(layer, attribute).assign(value.astype(getattr(layer, attribute).dtype))

        pending[id(layer)] = assign
        return layer


def _walk(model, inputs, call):
    """Runs `model`'s graph on `inputs` with `call(node, args, kwargs)` in place of each node's call."""
    tensors = {id(x): y for x, y in zip(model._inputs, keras.tree.flatten(inputs))}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.operation or node.is_input or any(id(x) not in tensors for x in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = call(node, args, kwargs)
            for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(x)] = y
    missing = [x.name for x in model._outputs if id(x) not in tensors]
    if missing:
        raise ValueError(f"{model.name}: outputs {missing} are not computed from its inputs")
    return keras.tree.pack_sequence_as(model._outputs_struct, [tensors[id(x)] for x in model._outputs])


def _frozen(decision):
    """A hashable form of a plan entry (taps, or a nested model's plan dict)."""
    if isinstance(decision, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in decision.items()))
    return decision


def _unique(name, names):
    """`name`, or `name_2`, `name_3`... if its parent already holds a layer of that name."""
    candidate, k = name, 1
    while candidate in names:
        k += 1
        candidate = f"{name}_{k}"
    names.add(candidate)
    return candidate
