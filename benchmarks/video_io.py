"""The video dependency of synergyseg.predict, chosen by measurement: OpenCV vs imageio + its FFmpeg.

    pip install opencv-python-headless imageio imageio-ffmpeg
    python benchmarks/video_io.py --frames 120 --size 512x1024

Prints a Markdown table: installed size (the packages' files), import time (fresh process, best
of 3), and frames per second to encode a test clip and to decode the same files with each
library (best of 3). The clip is textured noise that moves, so the codecs have work to do.
"""

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CANDIDATES = {
    "opencv": {"packages": ["opencv-python-headless"], "import": "import cv2"},
    "imageio": {"packages": ["imageio", "imageio-ffmpeg"], "import": "import imageio.v3, imageio_ffmpeg"},
}


def installed_mb(packages):
    total = 0
    for name in packages:
        for f in importlib.metadata.distribution(name).files or []:
            path = f.locate()
            if os.path.isfile(path):
                total += os.path.getsize(path)
    return total / 1e6


def import_seconds(statement, tries=3):
    code = f"import time; s = time.perf_counter(); {statement}; print(time.perf_counter() - s)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout) for _ in range(tries))


def clip(frames, height, width):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8, width // 8 + frames, 3), dtype=np.uint8)
    base = base.repeat(8, 0).repeat(8, 1)
    return [np.ascontiguousarray(base[:, 8 * i: 8 * i + width]) for i in range(frames)]


def encode(library, path, frames, fps=25):
    height, width = frames[0].shape[:2]
    if library == "opencv":
        import cv2

        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    else:
        import imageio_ffmpeg

        writer = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, codec="libx264",
                                             macro_block_size=1)
        writer.send(None)
        for frame in frames:
            writer.send(frame)
        writer.close()


def decode(library, path):
    count = 0
    if library == "opencv":
        import cv2

        capture = cv2.VideoCapture(path)
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            count += 1
        capture.release()
    else:
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        width, height = meta["size"]
        for buffer in reader:
            np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
            count += 1
    return count


def best_fps(fn, count, tries=3):
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="512x1024", help="HEIGHTxWIDTH")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    frames = clip(args.frames, height, width)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for library in CANDIDATES:
            files[library] = os.path.join(tmp, f"{library}.mp4")
            rows[library] = {"encode": best_fps(lambda: encode(library, files[library], frames),
                                                len(frames), tries=1)}
        for library, spec in CANDIDATES.items():
            rows[library]["size"] = installed_mb(spec["packages"])
            rows[library]["import"] = import_seconds(spec["import"])
            for source in CANDIDATES:
                n = decode(library, files[source])
                assert n == len(frames), (library, source, n)
                rows[library][f"decode {source}"] = best_fps(lambda: decode(library, files[source]), n)
        sizes = {library: os.path.getsize(path) / 1e6 for library, path in files.items()}
    print(f"{args.frames} frames of {height}x{width}; opencv writes MPEG-4 Part 2 (mp4v, "
          f"{sizes['opencv']:.1f} MB), imageio H.264 (libx264, {sizes['imageio']:.1f} MB)\n")
    print("| library | installed MB | import s | encode fps | decode fps (opencv's file) | "
          "decode fps (imageio's file) |")
    print("|---|---|---|---|---|---|")
    for library, spec in CANDIDATES.items():
        r = rows[library]
        print(f"| {' + '.join(spec['packages'])} | {r['size']:.0f} | {r['import']:.2f} | "
              f"{r['encode']:.0f} | {r['decode opencv']:.0f} | {r['decode imageio']:.0f} |")


if __name__ == "__main__":
    main()
