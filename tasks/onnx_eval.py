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


class DeployedModel(nn.Module):
    """``test_step`` of an OpenMMLab model with the network's forward replaced by ``raw``:
    the model's data preprocessor -> ``raw`` -> :meth:`postprocess` (the model's own heads)."""

    def __init__(self, model: nn.Module, raw: RawFn) -> None:
        super().__init__()
        self.check(model)
        self.wrapped = [model]  # not a child: its weights are not part of this module
        self._raw = raw

    def check(self, model: nn.Module) -> None:
        """Raise a :class:`UserError` if ``model`` cannot be scored this way."""

    def postprocess(self, model: nn.Module, outputs: Any, samples: list) -> list:
        """The data samples with predictions, from the graph's raw ``outputs``."""
        raise NotImplementedError

    @torch.no_grad()
    def test_step(self, data: dict) -> list:
        model = self.wrapped[0]
        data = model.data_preprocessor(data, False)
        return self.postprocess(model, self._raw(data["inputs"]), data["data_samples"])


class DeployedDetector(DeployedModel):
    """A single-stage mmdet detector (RetinaNet, FCOS, ...): raw head maps ->
    ``bbox_head.predict_by_feat`` (box decoding, score threshold, NMS, rescaling)."""

    def check(self, model: nn.Module) -> None:
        from mmdet.models.detectors import SingleStageDetector

        if not isinstance(model, SingleStageDetector):
            raise UserError(f"deployed scoring supports single-stage detectors (RetinaNet, FCOS, ...); "
                            f"{type(model).__name__} is not one; leave out --deploy-eval")

    def postprocess(self, model: nn.Module, outputs: Any, samples: list) -> list:
        results = model.bbox_head.predict_by_feat(*outputs, batch_img_metas=[s.metainfo for s in samples],
                                                  rescale=True)
        return model.add_pred_to_datasample(samples, results)


class DeployedSegmentor(DeployedModel):
    """An mmseg ``EncoderDecoder`` in ``whole`` inference mode: raw decode-head logits ->
    ``decode_head.predict_by_feat`` (resize to the input) -> ``postprocess_result`` (unpad, resize
    to the original image, argmax)."""

    def check(self, model: nn.Module) -> None:
        from mmseg.models.segmentors import EncoderDecoder

        if not isinstance(model, EncoderDecoder):
            raise UserError(f"deployed scoring supports mmseg EncoderDecoder segmentors; {type(model).__name__} is "
                            "not one; leave out --deploy-eval")
        mode = (model.test_cfg or {}).get("mode", "whole")
        if mode != "whole":
            raise UserError(f"deployed scoring runs the graph on whole images; this segmentor's test_cfg.mode is "
                            f"'{mode}'; set --cfg-options model.test_cfg.mode=whole or leave out --deploy-eval")

    def postprocess(self, model: nn.Module, outputs: Any, samples: list) -> list:
        logits = model.decode_head.predict_by_feat(outputs, [s.metainfo for s in samples])
        return model.postprocess_result(logits, samples)
