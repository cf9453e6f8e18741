"""Per-instance crops of the original images, shared by the keypoint pipeline and the segmentation
pipeline's ``crop`` option: each instance's window is the authors' ``crop_to_bbox`` around its box
(``geometry.person_crops`` → ``preprocess.crop_window``, the window training crops with), resized and
padded to the canvas like a whole image (``preprocess.resize_and_pad``)."""
from __future__ import annotations

import torch

from pix2seq_fast.predictor.geometry import person_crops, pixel_boxes_to_canvas, pixel_factors
from pix2seq_fast.results import Detections


class CropBatch:
    """Instance crops of one image list. pixels ``[n, 3, H_c, W_c]`` (the canvas), factors ``[n, 2]``
    float64 ``(f_y, f_x)`` crop pixels per canvas unit, windows ``[n, 4]`` int64 ``x0 y0 x1 y1``
    (exclusive ends) in the original image, image ``[n]`` index, image_sizes ``[n, 2]`` (height,
    width) of each crop's image."""

    def __init__(self, images: list[torch.Tensor], instances: list[Detections], canvas,
                 padding: float, device):
        from pix2seq_fast.preprocess import canvas_hw, resize_and_pad  # noqa: PLC0415

        windows = [person_crops(torch.from_numpy(d.boxes_xyxy), *d.image_size, padding=padding)
                   for d in instances]
        self.windows = torch.cat(windows)
        self.image = torch.repeat_interleave(torch.arange(len(instances)),
                                             torch.tensor([len(d) for d in instances]))
        self.image_sizes = torch.tensor([d.image_size for d in instances],
                                        dtype=torch.int64).reshape(-1, 2)[self.image]
        n = self.windows.shape[0]
        self.pixels = torch.empty(n, 3, *canvas_hw(canvas), dtype=torch.float32, device=device)
        for j, ((x0, y0, x1, y1), i) in enumerate(zip(self.windows.tolist(), self.image.tolist())):
            padded, _ = resize_and_pad(images[i][:, y0:y1, x0:x1], canvas)
            self.pixels[j].copy_(padded)
        crop_sizes = torch.stack([self.windows[:, 3] - self.windows[:, 1],
                                  self.windows[:, 2] - self.windows[:, 0]], dim=1)
        self.factors = pixel_factors(crop_sizes, canvas)

    @property
    def offsets(self) -> torch.Tensor:
        """``[n, 2]`` int64 ``x0 y0``: each crop's top-left corner in its original image."""
        return self.windows[:, :2]

    def canvas_boxes(self, boxes_px: torch.Tensor) -> torch.Tensor:
        """``[n, 4]`` original-pixel ``xyxy`` boxes (one per crop) -> ``[n, 4]`` float32
        canvas-normalised ``ymin xmin ymax xmax`` in each crop's canvas, clamped to [0, 1]: the
        box shifted by the crop's offset, then ``pixel_boxes_to_canvas`` with the crop's factors."""
        offset = self.offsets.to(torch.float32)
        boxes_in_crop = boxes_px - offset.repeat(1, 2)
        return pixel_boxes_to_canvas(boxes_in_crop, self.factors).clamp_(0.0, 1.0)


def slice_instances(instances: list[Detections], lo: int, hi: int) -> list[Detections]:
    """The instances of flat indices ``[lo, hi)`` (image after image), still grouped per image."""
    sliced, first = [], 0
    for d in instances:
        a = min(max(lo - first, 0), len(d))
        b = max(min(hi - first, len(d)), a)
        sliced.append(Detections(d.boxes_xyxy[a:b], d.labels[a:b], d.scores[a:b], d.image_size))
        first += len(d)
    return sliced
