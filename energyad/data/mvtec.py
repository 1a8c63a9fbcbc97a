"""MVTec AD (Bergmann et al., CVPR 2019) in its official folder layout, plus augmentation helpers.

Layout of one category (the official archive unpacks to this)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect>/*.png            (defect "good" for defect-free test images)
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

A category without ``ground_truth/`` (e.g. a copy made for image-level work) loads with
``has_masks == False``; its masks are zeros and pixel metrics must not be computed on it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..config import cache_root, data_root
from .errors import DataError

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
           "transistor", "zipper")
CATEGORIES = TEXTURES + OBJECTS
GRAYSCALE = ("grid", "screw", "zipper")
ARCHIVE_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
ARCHIVE_FILE_URL = ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
                    "420938113-1629952094/mvtec_anomaly_detection.tar.xz")
SEARCHED = ("mvtec_ad", "mvtec_ad_256", "mvtec_anomaly_detection")
LAYOUT = ("<category>/train/good/*.png, <category>/test/<defect>/*.png, "
          "<category>/ground_truth/<defect>/<name>_mask.png")


def find_mvtec_root(category: str, root=None) -> Path:
    """The folder that holds ``<category>/``: ``root`` if given, else the first of
    ``<data root>/{mvtec_ad, mvtec_ad_256, mvtec_anomaly_detection}`` or ``<cache root>/synthetic_mvtec``
    that has it."""
    if root is not None:
        candidates = [Path(root)]
    else:
        candidates = [data_root() / name for name in SEARCHED] + [cache_root() / "synthetic_mvtec"]
    for folder in candidates:
        if (folder / category).is_dir():
            return folder
    raise DataError(
        f"MVTec AD category {category!r} not found in: {', '.join(str(c) for c in candidates)}. "
        f"Fix: download it with energyad.data.mvtec.download_mvtec(categories=[{category!r}]) or unpack the "
        f"official archive ({ARCHIVE_URL}) into {candidates[0]} so that it holds {LAYOUT}."
    )


def available_categories(categories=None, need_masks: bool = False) -> dict:
    """``{category: root}`` for every category (default: all 15) found under the data root;
    with ``need_masks``, only those that have ``ground_truth/`` (pixel metrics need it)."""
    found = {}
    for c in categories or CATEGORIES:
        try:
            root = find_mvtec_root(c)
        except DataError:
            continue
        if not need_masks or (root / c / "ground_truth").is_dir():
            found[c] = root
    return found


def read_image(path: Path, channels: int | None) -> torch.Tensor:
    """A PNG as a float tensor (C, H, W) in [0, 1]; ``channels`` 1 or 3 forces the mode."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = {1: "L", 3: "RGB"}.get(channels, "L" if im.mode in ("L", "I", "I;16", "1") else "RGB")
            a = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"Cannot read image {path}: {err}. The file is truncated or corrupt; "
                        "fix: replace it with the original from the data set archive.") from err
    t = torch.from_numpy(a)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()  # (C, H, W)


def _resize(x: torch.Tensor, size: int | None, mode: str) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x[None], size=(size, size), mode=mode, **kw)[0]


class MVTecAD(torch.utils.data.Dataset):
    """One MVTec AD category. ``ds[i]`` is a dict: ``image`` (C, H, W) in [0, 1], ``mask`` (1, H, W)
    binary (zeros for good images), ``label`` (0 good, 1 defect), ``defect`` (str), ``path`` (str).

    ``grayscale``: None keeps the files' own mode (grid, screw and zipper are one-channel), True
    forces one channel, False forces three.
    """

    def __init__(self, root=None, category: str = "bottle", split: str = "train", image_size: int | None = 128,
                 grayscale: bool | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self.root = find_mvtec_root(category, root)
        self.category, self.split, self.image_size = category, split, image_size
        folder = self.root / category
        for needed in ("train/good", "test"):
            if not (folder / needed).is_dir():
                raise DataError(f"{folder} does not follow the MVTec AD layout: {folder / needed} is missing. "
                                f"Expected {LAYOUT}.")
        self.channels = None if grayscale is None else (1 if grayscale else 3)
        self.has_masks = (folder / "ground_truth").is_dir()
        split_dir = folder / split
        self.items: list[tuple[Path, str]] = []
        for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = sorted(defect_dir.glob("*.png"))
            self.items += [(f, defect_dir.name) for f in files]
        if not self.items:
            raise DataError(f"No PNG images under {split_dir}. Expected {LAYOUT}.")
        if split == "test" and not self.has_masks:
            warnings.warn(f"MVTec category {category!r} at {folder} has no ground_truth/ folder: "
                          "masks are unavailable, so pixel metrics (pixel AUROC, AUPRO) cannot be computed; "
                          "image-level metrics only.", UserWarning, stacklevel=2)
        if split == "test" and self.has_masks:
            for path, defect in self.items:
                if defect != "good" and not self.mask_path(path, defect).exists():
                    raise DataError(f"Missing ground-truth mask {self.mask_path(path, defect)} for {path}. "
                                    "Fix: restore it from the official archive (every defect image has one).")

    def mask_path(self, path: Path, defect: str) -> Path:
        return self.root / self.category / "ground_truth" / defect / f"{path.stem}_mask.png"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        path, defect = self.items[i]
        image = _resize(read_image(path, self.channels), self.image_size, "bilinear").clamp(0, 1)
        label = int(defect != "good")
        if label and self.has_masks:
            mask = _resize(read_image(self.mask_path(path, defect), 1), self.image_size, "nearest")
            mask = (mask > 0.5).float()
        else:
            mask = torch.zeros(1, *image.shape[-2:])
        return {"image": image, "mask": mask, "label": label, "defect": defect, "path": str(path)}


def load_split(ds: MVTecAD, progress: bool = True):
    """Stack a whole split: ``(images (N, C, H, W), masks (N, 1, H, W), labels (N,), defects list)``."""
    from tqdm.auto import tqdm

    items = [ds[i] for i in tqdm(range(len(ds)), desc=f"{ds.category}/{ds.split}", disable=not progress,
                                 leave=False)]
    return (torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]),
            torch.tensor([it["label"] for it in items]), [it["defect"] for it in items])


def texture_random_crops(images: torch.Tensor, n: int, crop: int = 128, resize: int | None = 512,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Dehaene et al. Sec. 4.1: resize textures to ``resize`` then take ``n`` random ``crop`` patches.

    ``images`` (N, C, H, W) -> (n, C, crop, crop); each crop comes from a random image and position.
    """
    if resize is not None:
        images = F.interpolate(images, size=(resize, resize), mode="bilinear", antialias=True, align_corners=False)
    N, C, H, W = images.shape
    if crop > min(H, W):
        raise ValueError(f"crop {crop} is larger than the images ({H}x{W})")
    idx = torch.randint(N, (n,), generator=generator)
    ys = torch.randint(H - crop + 1, (n,), generator=generator)
    xs = torch.randint(W - crop + 1, (n,), generator=generator)
    return torch.stack([images[i, :, y:y + crop, x:x + crop] for i, y, x in zip(idx, ys, xs)])


def object_augment(images: torch.Tensor, max_rotation_deg: float = 10.0, max_translation: float = 0.05,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random rotation (uniform in ±``max_rotation_deg``) and translation (fraction of the size) for
    object categories, with border pixels replicated. ``images`` (N, C, H, W) -> same shape."""
    N = images.shape[0]
    angle = (torch.rand(N, generator=generator) * 2 - 1) * max_rotation_deg * torch.pi / 180
    shift = (torch.rand(N, 2, generator=generator) * 2 - 1) * max_translation * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def download_mvtec(root=None, categories=None) -> Path:
    """Download the official MVTec AD archive (4.9 GB) and unpack it into ``<data root>/mvtec_ad``.

    MVTec distributes the data set after accepting its licence (CC BY-NC-SA 4.0); the archive address
    below is the one its download page links to, but it is not guaranteed to stay stable. MVTec does
    not publish a checksum, so ``known_hash=None``: integrity is checked by unpacking and by the layout
    checks of :class:`MVTecAD`. On failure a :class:`DataError` gives manual instructions.
    """
    import pooch

    target = Path(root) if root is not None else data_root() / "mvtec_ad"
    wanted = list(categories or CATEGORIES)
    if all((target / c).is_dir() for c in wanted):
        return target
    target.mkdir(parents=True, exist_ok=True)
    try:
        pooch.retrieve(ARCHIVE_FILE_URL, known_hash=None, fname="mvtec_anomaly_detection.tar.xz", path=target,
                       processor=pooch.Untar(extract_dir=str(target)), progressbar=True)
    except Exception as err:  # network or server errors
        raise DataError(
            f"Could not download MVTec AD ({type(err).__name__}: {err}). Fix: download the archive from "
            f"{ARCHIVE_URL} (licence CC BY-NC-SA 4.0) and unpack it so that {target}/<category>/ holds "
            f"{LAYOUT}, or set ENERGYAD_DATA to a folder whose mvtec_ad/ holds it."
        ) from err
    missing = [c for c in wanted if not (target / c).is_dir()]
    if missing:
        raise DataError(f"The archive unpacked into {target} but lacks {missing}; expected {LAYOUT}.")
    return target


def brightness_control(root, category: str, image_size: int = 64) -> float:
    """A model-free control: the image AUROC of each test image's mean intensity (good = 0, defect = 1).

    Near 0.5 brightness says nothing about the labels; near 1 (or 0) it alone separates good from
    defective test images, and any image-level score that follows brightness inherits that. In the
    course's shared 256 px copy, *screw* gives 1.00: its good test images are darker (mean 0.67) than
    its training images (0.72) and its defective ones (0.73)."""
    from ..metrics import image_auroc

    x, _, y, _ = load_split(MVTecAD(root, category, "test", image_size=image_size), progress=False)
    return image_auroc(x.mean((1, 2, 3)), y)
