"""Agreement metrics on self-labelled data (``task.eval.self_labelled``): top-5, KL from FP and
top-1 on the views where FP is confident, checked on logits built by hand."""
import csv
import json
import math

import pytest
import torch
from torch import nn

import tasks  # noqa: F401 - registers the adapters
from tasks.agreement import CONFIDENT_P, weights_fingerprint
from tests.colour_model import WNIDS, colour_net, make_imagefolder
from tests.conftest import tiny_cls_config
from zaqbench.errors import UserError
from zaqbench.registry import build_task
from zaqbench.run.runner import main

CLASSES = 10


class LookupModel(nn.Module):
    """Returns the logits stored for each test image, found by exact match of the image: a model
    whose outputs are fixed by hand, the same in every evaluation and for any batch split."""

    def __init__(self, images: torch.Tensor, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images.flatten(1).clone())
        self.register_buffer("table", logits.clone())
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        index = torch.cdist(x.flatten(1), self.images).argmin(1)
        return self.table[index]


def self_labelled_adapter(fmnist_root, tmp_path, **eval_cfg):
    cfg = tiny_cls_config(eval=dict(batch_size=20, self_labelled=True, **eval_cfg))  # 48 views: 3 batches
    return build_task("cls", cfg=cfg, model_name="tiny", data_root=str(fmnist_root), cache_dir=tmp_path / "cache",
                      device=torch.device("cpu"))


def hand_built_logits(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FP logits (N, 10) whose top-1 is each view's label (self-labelled), confident on every third
    view and near-tied with the next class elsewhere; Q logits that flip top-1 to that next class on
    views i % 4 == 0 (the label stays 2nd: a top-5 hit) and push the label to the bottom on
    views i % 4 == 1 (a top-5 miss); elsewhere Q equals FP."""
    n = len(labels)
    fp = torch.zeros(n, CLASSES)
    q = torch.zeros(n, CLASSES)
    for i, y in enumerate(labels.tolist()):
        runner_up = (y + 1) % CLASSES
        fp[i, y] = 5.0 if i % 3 == 0 else 1.0
        fp[i, runner_up] = 0.5 if i % 3 == 0 else 0.9
        fp[i, (y + 2) % CLASSES] = -1.0
        q[i] = fp[i]
        if i % 4 == 0:
            q[i, runner_up] = fp[i, y] + 0.5
        elif i % 4 == 1:
            q[i, y] = -10.0
    return fp, q


def by_hand(fp: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """The metrics with plain Python loops over the views, independently of the adapter's code."""
    top5 = kl = confident = confident_agree = 0.0
    for p_row, q_row in zip(fp.tolist(), q.tolist()):
        zp, zq = sum(math.exp(v) for v in p_row), sum(math.exp(v) for v in q_row)
        p, qq = [math.exp(v) / zp for v in p_row], [math.exp(v) / zq for v in q_row]
        label = p.index(max(p))
        top5 += label in sorted(range(CLASSES), key=lambda c: -qq[c])[:5]
        kl += sum(pc * math.log(pc / qc) for pc, qc in zip(p, qq))
        if max(p) > CONFIDENT_P:
            confident += 1
            confident_agree += qq.index(max(qq)) == label
    n = len(fp)
    return {"top5": 100 * top5 / n, "kl_fp": kl / n, "top1_confident": 100 * confident_agree / max(1, confident),
            "confident_fraction": confident / n}


@pytest.fixture
def hand_built(fmnist_root, tmp_path):
    adapter = self_labelled_adapter(fmnist_root, tmp_path)
    adapter.check()
    test = adapter.split("test")
    fp_logits, q_logits = hand_built_logits(test.labels)
    fp = LookupModel(test.images, fp_logits)
    q = LookupModel(test.images, q_logits)
    adapter.set_fp_model(fp)
    return adapter, fp, q, fp_logits, q_logits


def test_metrics_match_a_hand_computation(hand_built):
    adapter, fp, q, fp_logits, q_logits = hand_built
    metrics = adapter.evaluate(q)
    expected = by_hand(fp_logits, q_logits)
    n = len(fp_logits)
    # top-1 flips on i % 4 in {0, 1}: half the views; top-5 keeps the label on i % 4 == 0
    assert metrics["top1"] == pytest.approx(100 * sum(i % 4 >= 2 for i in range(n)) / n) == 50.0
    assert metrics["top5"] == pytest.approx(expected["top5"]) == 75.0
    assert metrics["kl_fp"] == pytest.approx(expected["kl_fp"], rel=1e-9) and metrics["kl_fp"] > 0
    # FP is confident (p > 0.5) exactly on the views i % 3 == 0, and only there
    confident = [i for i in range(n) if torch.softmax(fp_logits[i], 0).max() > CONFIDENT_P]
    assert confident == list(range(0, n, 3))
    assert metrics["confident_fraction"] == pytest.approx(expected["confident_fraction"]) == pytest.approx(1 / 3)
    agree = [i for i in confident if i % 4 >= 2]
    assert metrics["top1_confident"] == pytest.approx(100 * len(agree) / len(confident))
    assert metrics["top1_confident"] == pytest.approx(expected["top1_confident"])
    assert set(metrics) == {"top1", "top5", "kl_fp", "top1_confident", "confident_fraction"}


def test_fp_row_has_the_ideal_values(hand_built):
    adapter, fp, _, _, _ = hand_built
    metrics = adapter.evaluate(fp)
    assert metrics["top1"] == 100.0 and metrics["top5"] == 100.0 and metrics["top1_confident"] == 100.0
    assert metrics["kl_fp"] == 0.0  # exactly: the same logits on both sides
    assert adapter.fp_warning(metrics) is None


def test_fp_logits_are_computed_once_per_evaluation_set(hand_built):
    adapter, fp, q, _, _ = hand_built
    first = adapter.evaluate(q)  # evaluates FP first (3 batches), then Q
    assert fp.calls == 3
    assert adapter.evaluate(q) == first and adapter.evaluate(fp)["kl_fp"] == 0.0
    assert fp.calls == 3 + 3  # the second Q evaluation reused them; FP's own row runs FP once more


def test_another_fp_model_does_not_reuse_the_cached_logits(hand_built):
    adapter, fp, q, fp_logits, q_logits = hand_built
    adapter.evaluate(q)
    # a different P (Q's logits as the reference): its own row is ideal, and Q against it is too
    other = LookupModel(adapter.split("test").images, q_logits)
    assert weights_fingerprint(other) != weights_fingerprint(fp)
    adapter.set_fp_model(other)
    assert adapter.evaluate(q)["kl_fp"] == 0.0 and adapter.evaluate(q)["top5"] == 100.0
    # and the original P against this new reference measures the reverse divergence
    assert adapter.evaluate(fp)["kl_fp"] == pytest.approx(by_hand(q_logits, fp_logits)["kl_fp"], rel=1e-9)


def test_loading_weights_names_the_fp_model(fmnist_root, tmp_path):
    adapter = self_labelled_adapter(fmnist_root, tmp_path)
    adapter.check()
    model = adapter.build_model()
    with pytest.raises(UserError, match="self_labelled needs the full-precision model"):
        adapter.evaluate(model)
    adapter.load_state_dict(model, adapter.build_model().state_dict())
    metrics = adapter.evaluate(model)
    assert (metrics["top5"], metrics["kl_fp"]) == (100.0, 0.0)


def test_no_confident_view_leaves_top1_confident_out(fmnist_root, tmp_path):
    adapter = self_labelled_adapter(fmnist_root, tmp_path)
    adapter.check()
    test = adapter.split("test")
    flat = LookupModel(test.images, torch.nn.functional.one_hot(test.labels, CLASSES).float() * 0.1)
    adapter.set_fp_model(flat)
    metrics = adapter.evaluate(flat)
    assert metrics["confident_fraction"] == 0.0 and "top1_confident" not in metrics


def test_fp_warning_when_labels_are_not_fp_predictions(fmnist_root, tmp_path):
    adapter = self_labelled_adapter(fmnist_root, tmp_path)
    adapter.check()
    test = adapter.split("test")
    wrong = LookupModel(test.images, torch.nn.functional.one_hot((test.labels + 1) % CLASSES, CLASSES).float())
    adapter.set_fp_model(wrong)
    metrics = adapter.evaluate(wrong)
    assert metrics["top1"] == 0.0 and metrics["top5"] == 100.0  # measured against FP's own predictions
    assert "not the full-precision model's own predictions" in adapter.fp_warning(metrics)


def test_ordinary_evaluation_is_unchanged(cls_adapter):
    model = cls_adapter.build_model()
    cls_adapter.load_state_dict(model, model.state_dict())  # names P; without the switch nothing else changes
    assert set(cls_adapter.evaluate(model)) == {"top1"}


def test_switch_must_be_a_bool(fmnist_root, tmp_path):
    adapter = self_labelled_adapter(fmnist_root, tmp_path)
    adapter.eval_cfg["self_labelled"] = "yes"
    with pytest.raises(UserError, match="task.eval.self_labelled must be True or False"):
        adapter.check()


SELF_LABELLED_CONFIG = """
custom_imports = dict(imports=['tests.colour_model'], allow_failed_imports=False)
task = dict(type='cls', model=dict(arch='colour_net', num_classes=3, in_channels=3),
            data=dict(image_size=16, class_map={class_map!r}),
            eval=dict(batch_size=5, workers=0, self_labelled=True))
quant = dict(preset='default', first_fp=False)  # the conv quantized, the head in FP
methods = dict(ptq=dict(batch_size=4, calib_batches=1))
"""


def test_runner_rows_carry_the_agreement_metrics(tmp_path, monkeypatch, capsys):
    """Through the runner on an ImageFolder: the metrics land in each row's extra_metrics."""
    monkeypatch.setenv("ZAQBENCH_CACHE", str(tmp_path / "cache"))
    root = make_imagefolder(tmp_path / "imgs")
    mapping = tmp_path / "classes.json"
    mapping.write_text(json.dumps({w: i for i, w in enumerate(WNIDS)}))
    config = tmp_path / "colour.py"
    config.write_text(SELF_LABELLED_CONFIG.format(class_map=str(mapping)))
    ckpt = tmp_path / "colour.pth"
    torch.save(colour_net(num_classes=3, in_channels=3).state_dict(), ckpt)
    out = tmp_path / "rows.csv"
    code = main(["--task", "cls", "--config", str(config), "--checkpoint", str(ckpt), "--data-root", str(root),
                 "--methods", "fp,ptq", "--bits", "8", "--out", str(out), "--work-dir", str(tmp_path / "work"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with open(out) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    extra = {m: dict(kv.split("=", 1) for kv in r["extra_metrics"].split(";")) for m, r in rows.items()}
    assert float(rows["fp"]["value"]) == 100.0
    assert {k: float(extra["fp"][k]) for k in ("top5", "kl_fp", "top1_confident", "confident_fraction")} == \
        {"top5": 100.0, "kl_fp": 0.0, "top1_confident": 100.0, "confident_fraction": 1.0}
    assert {"top5", "kl_fp", "top1_confident", "confident_fraction"} <= set(extra["ptq"])
    assert float(extra["ptq"]["kl_fp"]) >= 0.0
