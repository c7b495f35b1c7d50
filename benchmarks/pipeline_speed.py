"""Images/s of the training input pipeline, next to the training step rate of the model.

    python benchmarks/pipeline_speed.py                      # all cases below, ~3 min on 2 cores
    python benchmarks/pipeline_speed.py --cases synthetic --skip-model

The pipeline must never be the bottleneck: its images/s should stay well above the model's.
Cases (name: image size, crop, batch, model):
    synthetic:  256x512 scenes, crop 128x256, batch 8 (train.py's default), the synthetic
                preset's narrow ResNet-18 SynergySeg
    synth-256:  256x512 scenes, crop 256x512, batch 8, the same model
    cityscapes: 1024x2048 scenes (Cityscapes' size, PNG), crop 768x768, batch 2, ResNet-50
                SynergySeg (the cityscapes preset)
    cityscapes-jpeg: the same with JPEG images (`datasets/cityscapes.py --image-format jpeg`)
The data are synthetic scenes written once into --data-dir. Their sensor noise makes the PNGs
larger (~4 MB) than Cityscapes' own (~2 MB), so the PNG case is a pessimistic bound.
"""

import argparse
import os
import time

import synergyseg  # noqa: E402  (first: TensorFlow loads without its start-up lines, synergyseg.quiet)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from synergyseg import data  # noqa: E402

# train.py's synthetic preset: a narrow ResNet-18 so a run fits in ~10 minutes on 2 cores.
SMALL = dict(backbone="resnet18", backbone_width=16, head_filters=64, low_level_filters=16)
PAPER = dict(backbone="resnet50")
# name: (scene size, image format, crop, batch, model, model steps to time; 0: not timed)
CASES = {
    "synthetic": ((256, 512), "png", (128, 256), 8, SMALL, 5),
    "synth-256": ((256, 512), "png", (256, 512), 8, SMALL, 3),
    "cityscapes": ((1024, 2048), "png", (768, 768), 2, PAPER, 2),
    "cityscapes-jpeg": ((1024, 2048), "jpeg", (768, 768), 2, PAPER, 0),
}


def pipeline_rate(pattern, crop, batch, batches, jitter):
    """Images/s of `train_dataset` after one warm-up batch (repeats the data as training does)."""
    ds = data.train_dataset(pattern, batch, crop, jitter=jitter).repeat()
    iterator = iter(ds)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def model_rate(num_classes, model_kwargs, crop, batch, steps):
    """Images/s of `model.fit`-style train steps of SynergySeg on random inputs."""
    import keras

    model = synergyseg.build_synergyseg(num_classes, **model_kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
    x = np.random.uniform(0, 255, (batch,) + tuple(crop) + (3,)).astype(np.float32)
    y = np.random.randint(0, num_classes, (batch,) + tuple(crop)).astype(np.int32)
    model.train_on_batch(x, y)  # compile and warm up
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--data-dir", default="/tmp/synergyseg-bench", help="scenes are cached here")
    parser.add_argument("--images", type=int, default=32, help="scenes per case")
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches to time")
    parser.add_argument("--jitter", action="store_true", help="time with photometric jitter")
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"{'case':<15} {'scene':>10} {'crop':>9} {'batch':>5} {'pipeline img/s':>15} "
          f"{'model':>9} {'model img/s':>12}")
    for name in args.cases:
        (h, w), image_format, crop, batch, model_kwargs, steps = CASES[name]
        out = os.path.join(args.data_dir, f"{h}x{w}-{image_format}")
        if not os.path.exists(os.path.join(out, data.shard_name("train", 0, 4))):
            data.synthetic.generate(out, num_train=args.images, num_val=0, height=h, width=w,
                                    num_shards=4, image_format=image_format, log=None)
        pattern = os.path.join(out, "train-*.tfrecord")
        images = pipeline_rate(pattern, crop, batch, args.batches, args.jitter)
        model = float("nan") if args.skip_model or not steps else model_rate(
            data.SYNTHETIC.num_classes, model_kwargs, crop, batch, steps)
        print(f"{name:<15} {f'{h}x{w}':>10} {f'{crop[0]}x{crop[1]}':>9} {batch:>5} "
              f"{images:>15.1f} {model_kwargs['backbone']:>9} {model:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
