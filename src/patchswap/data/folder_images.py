"""Image files decoded a batch at a time: torchvision.io decoding, crop/resize on uint8 tensors, bad files.

:class:`FolderImages` is the dataset behind ``folder:DIR``. ``__getitems__`` (one call per batch, in a
DataLoader worker) reads and decodes each file with ``torchvision.io.decode_image`` (PIL for the formats
it lacks), then crops and resizes the uint8 tensor straight to ``image_size`` (antialiased): training
draws a ``RandomResizedCrop`` box and a horizontal flip, evaluation resizes the shorter side to
``image_size / crop_pct`` and takes the centre. No PIL image, no per-item float conversion: batches
travel as uint8 and are normalised batched on the device (:class:`~patchswap.data.transforms.DeviceAugment`).

Bad files never stop an epoch: :func:`scan_images` drops unreadable, empty, non-image and truncated
files before training (with a count and a warning naming the first few); a file that still fails to
decode is replaced by another image of the same class (``on_bad_image="skip"``, a warning names it) or
raises :class:`BadImageError` (``"error"``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .arrays import ImageBatch

__all__ = [
    "IMAGE_EXTENSIONS",
    "ON_BAD_IMAGE",
    "BadImageError",
    "FolderImages",
    "check_image_file",
    "decode_file",
    "scan_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
ON_BAD_IMAGE = ("skip", "error")
DEFAULT_CROP_PCT = 224 / 256  # eval: Resize(S * 256 / 224) + CenterCrop(S), the ImageNet protocol
_SHOWN = 5  # bad paths named in a warning or an error
# Formats torchvision.io decodes itself; anything else goes through PIL.
_TV_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8")
_OTHER_MAGIC = (b"BM", b"II*\x00", b"MM\x00*", b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


class BadImageError(RuntimeError):
    """An image file that cannot be read or decoded (with ``data.on_bad_image=error``)."""


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def check_image_file(path: str) -> str | None:
    """Why ``path`` is not a usable image (cheap: header and tail bytes only), or None if it looks fine.

    Catches unreadable and empty files, files whose content is no known image format, and JPEGs with
    no end-of-image marker (truncated); a JPEG that looks truncated is decoded to be sure.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            if head[:3] == b"\xff\xd8\xff":
                f.seek(max(0, size - 1024))
                tail = f.read()
            else:
                tail = b""
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if size == 0:
        return "empty file"
    if not (head.startswith(_TV_MAGIC) or head.startswith(_OTHER_MAGIC) or _is_webp(head)):
        return f"not an image (starts with {head[:8]!r})"
    if tail and b"\xff\xd9" not in tail:
        try:
            decode_file(path)
        except BadImageError:
            return "truncated JPEG (no end-of-image marker)"
    return None


def decode_file(path: str) -> torch.Tensor:
    """uint8 RGB ``[3, H, W]`` of an image file; :class:`BadImageError` (naming it) when it cannot be."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise BadImageError(f"cannot read image {path}: {err.strerror or err}") from err
    head = data[:16]
    try:
        if head.startswith(_TV_MAGIC) or _is_webp(head):
            from torchvision.io import ImageReadMode, decode_image

            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            with warnings.catch_warnings():  # torchvision 0.29 deprecates torchvision.io for torchcodec
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_image(buf, mode=ImageReadMode.RGB)
            if image.dtype != torch.uint8:  # 16-bit PNG
                image = (image.float() * (255.0 / 65535.0)).round_().to(torch.uint8)
            if image.ndim == 4:  # an animated GIF: its first frame
                image = image[0]
            return image
        from PIL import Image

        with Image.open(path) as pil:
            rgb = np.asarray(pil.convert("RGB"))
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
    except Exception as err:  # noqa: BLE001 - every decoder failure means the same: a bad file
        raise BadImageError(f"cannot decode image {path}: {str(err).strip() or type(err).__name__}") from err


def scan_images(
    directory: str, classes: Sequence[str], on_bad_image: str = "skip"
) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """``(samples, bad)`` of ``directory/<class>/**``: (path, class index) in sorted order, and the
    (path, reason) of every file left out. Hidden files are ignored; anything else that is no usable
    image is bad: a warning (``skip``) or a :class:`BadImageError` (``error``) names the first few."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, got {on_bad_image!r}")
    samples: list[tuple[str, int]] = []
    bad: list[tuple[str, str]] = []
    for index, name in enumerate(classes):
        top = os.path.join(directory, name)
        for root, dirs, files in sorted(os.walk(top, followlinks=True)):
            dirs.sort()
            for file in sorted(files):
                if file.startswith("."):
                    continue
                path = os.path.join(root, file)
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    bad.append((path, "not an image file name"))
                    continue
                reason = check_image_file(path)
                if reason is None:
                    samples.append((path, index))
                else:
                    bad.append((path, reason))
    if bad:
        shown = "; ".join(f"{p} ({why})" for p, why in bad[:_SHOWN])
        more = f"; ... (+{len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        if on_bad_image == "error":
            raise BadImageError(
                f"{len(bad)} unusable file(s) in {directory}: {shown}{more}. Remove them, or set "
                "data.on_bad_image=skip to train without them"
            )
        warnings.warn(
            f"skipped {len(bad)} unusable file(s) in {directory}: {shown}{more}", UserWarning, stacklevel=2
        )
    return samples, bad


class FolderImages(torch.utils.data.Dataset):
    """Image files with labels, yielding uint8 ``[3, S, S]`` (one batch per ``__getitems__`` call).

    ``train``: a ``RandomResizedCrop(S, scale, ratio)`` box and a horizontal flip (p = 0.5) per image,
    drawn from torch's default generator, which the engine seeds per training batch from (seed, epoch,
    the batch's indices) in whichever process fetches it (``SeededFetches``); else the eval crop
    (shorter side to ``S / crop_pct``, centre ``S x S``). ``targets``, ``classes`` and ``bad`` (files left
    out at scan time) need no decoding.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        image_size: int,
        *,
        train: bool,
        on_bad_image: str = "skip",
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        crop_pct: float = DEFAULT_CROP_PCT,
        bad: Sequence[tuple[str, str]] = (),
    ) -> None:
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, got {on_bad_image!r}")
        self.samples = [(str(p), int(t)) for p, t in samples]
        self.classes = [str(c) for c in classes]
        self.targets = torch.as_tensor([t for _, t in self.samples], dtype=torch.int64)
        self.image_size = int(image_size)
        self.train = bool(train)
        self.on_bad_image = on_bad_image
        self.scale, self.ratio, self.crop_pct = scale, ratio, float(crop_pct)
        self.bad = list(bad)
        self._failed: set[int] = set()  # indices that failed to decode in this process

    def with_train(self, train: bool) -> FolderImages:
        """The same files with the training or the eval crop (no second directory walk)."""
        other = FolderImages.__new__(FolderImages)
        other.__dict__.update(self.__dict__)
        other.train = bool(train)
        other._failed = set()
        return other

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        kind = "RandomResizedCrop" if self.train else f"CenterCrop(crop_pct={self.crop_pct:.3f})"
        return f"FolderImages(n={len(self)}, classes={len(self.classes)}, size={self.image_size}, {kind})"

    # -- one image -------------------------------------------------------------------------------
    def _crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of torchvision's RandomResizedCrop, or of the eval centre crop."""
        if not self.train:
            side = min(h, w) * self.crop_pct
            ch, cw = min(h, round(side)), min(w, round(side))
            return (h - ch) // 2, (w - cw) // 2, ch, cw
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
            cw = round(math.sqrt(target * aspect))
            ch = round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, size=(1,)).item())
                left = int(torch.randint(0, w - cw + 1, size=(1,)).item())
                return top, left, ch, cw
        in_ratio = w / h  # fallback: the centre crop at the nearest allowed aspect ratio
        if in_ratio < min(self.ratio):
            cw, ch = w, round(w / min(self.ratio))
        elif in_ratio > max(self.ratio):
            ch, cw = h, round(h * max(self.ratio))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def load(self, index: int) -> torch.Tensor:
        """The uint8 ``[3, S, S]`` image of sample ``index`` (may raise :class:`BadImageError`)."""
        from torchvision.transforms.v2 import functional as F2

        image = decode_file(self.samples[index][0])
        h, w = image.shape[-2:]
        if self.train:
            top, left, ch, cw = self._crop_box(h, w)
            s = self.image_size
            image = F2.resized_crop(image, top, left, ch, cw, [s, s], antialias=True)
            # RandomHorizontalFlip(0.5)'s draw; flipping one 8-bit image here costs far less than a
            # batched gather after the transfer on a CPU (the normalisation still runs batched there)
            return image.flip(-1) if torch.rand(1).item() < 0.5 else image
        return self.eval_crop(image)

    def eval_crop(self, image: torch.Tensor) -> torch.Tensor:
        """The eval view of a decoded uint8 image: shorter side to ``S / crop_pct``, centre ``S x S``.

        Public so that prediction on new files sees exactly what evaluation saw.
        """
        from torchvision.transforms.v2 import functional as F2

        resize = int(self.image_size / self.crop_pct)  # shorter side, as torchvision's Resize(int)
        image = F2.resize(image, [resize], antialias=True)
        return F2.center_crop(image, [self.image_size, self.image_size])

    def _replacement(self, index: int) -> int | None:
        """The next sample of the same class that has not failed (None: the class has no good one)."""
        label = self.samples[index][1]
        n = len(self.samples)
        for step in range(1, n):
            j = (index + step) % n
            if self.samples[j][1] == label and j not in self._failed:
                return j
        return None

    def _load_or_replace(self, index: int) -> torch.Tensor:
        tried = index
        while True:
            if tried in self._failed:  # known bad in this process: straight to its stand-in, no warning
                nxt = self._replacement(tried)
                if nxt is None:
                    raise BadImageError(
                        f"no readable image of class {self.classes[self.samples[index][1]]!r}"
                    )
                tried = nxt
                continue
            try:
                return self.load(tried)
            except BadImageError as err:
                if self.on_bad_image == "error":
                    raise BadImageError(f"{err} (set data.on_bad_image=skip to train without it)") from err
                self._failed.add(tried)
                nxt = self._replacement(tried)
                warnings.warn(
                    f"skipped an unreadable image: {err}; "
                    + (
                        f"using {self.samples[nxt][0]} of the same class in its place"
                        if nxt is not None
                        else "no other image of its class is readable"
                    ),
                    UserWarning,
                    stacklevel=2,
                )
                if nxt is None:
                    name = self.classes[self.samples[index][1]]
                    raise BadImageError(f"no readable image of class {name!r}") from err
                tried = nxt

    # -- Dataset protocol ------------------------------------------------------------------------
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._load_or_replace(int(index)), int(self.samples[int(index)][1])

    def __getitems__(self, indices: Sequence[int]) -> ImageBatch:
        idx = [int(i) for i in indices]
        s = self.image_size
        out = torch.empty((len(idx), 3, s, s), dtype=torch.uint8)
        for row, i in enumerate(idx):
            out[row] = self._load_or_replace(i)
        return ImageBatch(out, self.targets[torch.as_tensor(idx, dtype=torch.long)])
