"""Scoring a deployed detector or segmentor: the exported graph's raw outputs through the same
OpenMMLab post-processing and metric as the torch model.

The graph computes what ``model(x, mode='tensor')`` returns (a detector's per-level head maps, a
segmentor's decode-head logits). The stand-ins below replace exactly that part of
``model.test_step``: the model's own data preprocessor before it, and after it the head's own
``predict_by_feat`` (mmdet: box decoding, score threshold, NMS, rescaling; mmseg: resize to the
input) and the segmentor's ``postprocess_result``. The adapters' ``evaluate`` then runs unchanged
(``CocoMetric``, ``IoUMetric``). No weight of ``model`` is used: the network is the graph.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from zaqbench.errors import UserError

RawFn = Callable[[torch.Tensor], Any]


class DeployedDetector(nn.Module):
    """``test_step`` of a single-stage mmdet detector (RetinaNet, FCOS, ...) with the network's
    forward replaced by ``raw``: preprocess -> raw head maps -> ``bbox_head.predict_by_feat``."""

    def __init__(self, model: nn.Module, raw: RawFn) -> None:
        super().__init__()
        from mmdet.models.detectors import SingleStageDetector

        if not isinstance(model, SingleStageDetector):
            raise UserError(f"deployed scoring supports single-stage detectors (RetinaNet, FCOS, ...); "
                            f"{type(model).__name__} is not one; leave out --deploy-eval")
        self.detector = [model]  # not a child: its weights are not part of this module
        self._raw = raw

    @torch.no_grad()
    def test_step(self, data: dict) -> list:
        model = self.detector[0]
        data = model.data_preprocessor(data, False)
        samples = data["data_samples"]
        outputs = self._raw(data["inputs"])
        results = model.bbox_head.predict_by_feat(*outputs, batch_img_metas=[s.metainfo for s in samples],
                                                  rescale=True)
        return model.add_pred_to_datasample(samples, results)


class DeployedSegmentor(nn.Module):
    """``test_step`` of an mmseg ``EncoderDecoder`` in ``whole`` inference mode with the network's
    forward replaced by ``raw``: preprocess -> raw decode-head logits -> ``decode_head.predict_by_feat``
    (resize to the input) -> ``postprocess_result`` (unpad, resize to the original image, argmax)."""

    def __init__(self, model: nn.Module, raw: RawFn) -> None:
        super().__init__()
        from mmseg.models.segmentors import EncoderDecoder

        if not isinstance(model, EncoderDecoder):
            raise UserError(f"deployed scoring supports mmseg EncoderDecoder segmentors; {type(model).__name__} is "
                            "not one; leave out --deploy-eval")
        mode = (model.test_cfg or {}).get("mode", "whole")
        if mode != "whole":
            raise UserError(f"deployed scoring runs the graph on whole images; this segmentor's test_cfg.mode is "
                            f"'{mode}'; set --cfg-options model.test_cfg.mode=whole or leave out --deploy-eval")
        self.segmentor = [model]  # not a child: its weights are not part of this module
        self._raw = raw

    @torch.no_grad()
    def test_step(self, data: dict) -> list:
        model = self.segmentor[0]
        data = model.data_preprocessor(data, False)
        samples = data["data_samples"]
        logits = model.decode_head.predict_by_feat(self._raw(data["inputs"]), [s.metainfo for s in samples])
        return model.postprocess_result(logits, samples)
