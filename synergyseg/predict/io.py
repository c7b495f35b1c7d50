"""Reading pictures and videos and writing results, each file whole (synergyseg.atomic).

Pictures go through Pillow; videos through OpenCV (`pip install -e ".[video]"`, see README for
why), imported only when a video is read or written.
"""

import contextlib
import glob
import os

import numpy as np
from PIL import Image, ImageOps

from synergyseg.atomic import atomic_output

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# MPEG-4 Part 2: the codec OpenCV's wheel can write everywhere (its FFmpeg has no H.264 encoder).
VIDEO_CODEC = "mp4v"


def kind_of(path):
    """"image", "video" or None, by the file name's extension."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return "image"
    if extension in VIDEO_EXTENSIONS:
        return "video"
    return None


def read_image(path):
    """The picture at `path` as (H, W, 3) uint8 RGB, upright as its EXIF says; ValueError naming it if unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image {path!r} does not exist")
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything now: a truncated file fails here, not later
            return to_rgb(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path!r} is not a readable image: {e}") from e


def to_rgb(image):
    """A PIL image or array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as (H, W, 3) RGB (alpha dropped)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def as_batch(images):
    """`(list of (H, W, 3) RGB arrays, single)` from one picture or a batch (path, PIL, array, list)."""
    if isinstance(images, (list, tuple)):
        return [_one(image) for image in images], False
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [to_rgb(image) for image in images], False
    return [_one(images)], True


def _one(image):
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_rgb(image)


def write_png(path, array):
    """Writes a uint8 (H, W) or (H, W, 3) array as PNG to `path`, whole or not at all."""
    with atomic_output(path) as tmp:
        Image.fromarray(np.asarray(array, np.uint8)).save(tmp, format="PNG")
    return path


def find_inputs(patterns, exclude=None):
    """`[(kind, path, name)]` for image/video files, folders (walked) and globs, in order.

    `name` is where the file's outputs go, relative to the output folder, without extension: the
    file's stem, or its path below a folder given as input. Files under `exclude` (the output
    folder) are left out of folders and globs. Folders skip other files; a file named directly
    must be an image or video.
    """
    exclude = os.path.abspath(exclude) + os.sep if exclude else None
    found, seen = [], set()

    def add(path, name):
        absolute = os.path.abspath(path)
        if absolute in seen or (exclude and absolute.startswith(exclude)):
            return
        seen.add(absolute)
        found.append((kind_of(path), path, name))

    for pattern in patterns:
        pattern = os.fspath(pattern)
        if os.path.isdir(pattern):
            files = []
            for root, dirs, names in os.walk(pattern):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
            for path in files:
                if kind_of(path):
                    add(path, os.path.splitext(os.path.relpath(path, pattern))[0])
            continue
        matches = [pattern] if os.path.exists(pattern) else sorted(glob.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"Input {pattern!r} does not exist (and as a glob matches nothing)")
        for path in matches:
            if os.path.isdir(path):
                continue
            if kind_of(path) is None:
                if pattern == path:
                    raise ValueError(
                        f"Input {path!r} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a "
                        f"video ({', '.join(VIDEO_EXTENSIONS)})")
                continue
            add(path, os.path.splitext(os.path.basename(path))[0])
    return found


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError('Videos need OpenCV: pip install -e ".[video]" '
                          "(or pip install opencv-python-headless)") from e
    return cv2


class VideoReader:
    """The frames of a video file as (H, W, 3) uint8 RGB; ValueError naming the file if unreadable.

    Example:
        >>> with VideoReader("drive.mp4") as video:
        ...     for frame in video: ...
    """

    def __init__(self, path):
        cv2 = _cv2()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"Video {self.path!r} does not exist")
        self._capture = cv2.VideoCapture(self.path)
        ok, frame = self._capture.read() if self._capture.isOpened() else (False, None)
        if not ok:
            self._capture.release()
            raise ValueError(f"{self.path!r} is not a readable video (OpenCV could not decode a frame)")
        self._first = frame
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.height, self.width = frame.shape[:2]
        # From the container; may be approximate, only used for the progress bar.
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def __iter__(self):
        cv2 = _cv2()
        frame = self._first
        while frame is not None:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            ok, frame = self._capture.read()
            frame = frame if ok else None

    def close(self):
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def video_writer(path, fps, size):
    """Yields `write(frame)` for (H, W, 3) uint8 RGB frames of `size`; the MPEG-4 file at `path`
    appears only once the block ends without error.

    Example:
        >>> with video_writer("out.mp4", 25, (256, 512)) as write:
        ...     write(frame)
    """
    cv2 = _cv2()
    path = os.fspath(path)
    height, width = size
    with atomic_output(path) as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*VIDEO_CODEC), float(fps), (width, height))
        if not writer.isOpened():
            raise ValueError(f"Cannot write video {path!r} with codec {VIDEO_CODEC}")

        def write(frame):
            frame = np.asarray(frame, np.uint8)
            if frame.shape != (height, width, 3):
                raise ValueError(f"frame of shape {frame.shape} for video {path!r} of {height}x{width}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

        try:
            yield write
        finally:
            writer.release()
