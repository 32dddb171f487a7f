import pytest
import torch

import tasks  # noqa: F401 - registers the adapters
from tests.conftest import tiny_cls_config
from zaqbench.errors import UserError
from zaqbench.zaq.features import forward_with_features
from zaqbench.registry import build_task


def test_input_spec_features_and_outputs(cls_adapter):
    spec = cls_adapter.input_spec
    assert (spec.channels, spec.height, spec.width) == (1, 16, 16)
    model = cls_adapter.build_model().eval()
    x = torch.randn(spec.shape(3))
    out, feats = forward_with_features(model, cls_adapter.feature_names, cls_adapter.forward_raw, x)
    assert out.shape == (3, 10)
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 16, 16), (8, 8, 8), (16, 4, 4)]


def test_real_data_is_normalised_and_evaluate_counts(cls_adapter):
    train = cls_adapter.split("train")
    assert train.images.shape == (96, 1, 16, 16)
    spec = cls_adapter.input_spec
    assert train.images.min().item() == pytest.approx(-spec.mean[0] / spec.std[0], abs=0.01)
    batches = list(cls_adapter.real_batches(8, 3, seed=0))
    assert len(batches) == 3 and batches[0].shape == (8, 1, 16, 16)

    class Oracle(torch.nn.Module):  # predicts the test labels: 100% by construction
        def __init__(self, labels):
            super().__init__()
            self.labels, self.i = labels, 0

        def forward(self, x):
            y = self.labels[self.i:self.i + len(x)]
            self.i += len(x)
            return torch.nn.functional.one_hot(y, 10).float()

    test = cls_adapter.split("test")
    assert cls_adapter.evaluate(Oracle(test.labels)) == {"top1": 100.0}
    assert cls_adapter.evaluate(Oracle((test.labels + 1) % 10)) == {"top1": 0.0}


def test_teacher_training_learns_the_toy_data(cls_adapter):
    model = cls_adapter.build_model()
    before = cls_adapter.evaluate(model)["top1"]
    cls_adapter.task_cfg["teacher"] = dict(epochs=8, batch_size=16, lr=0.05)
    cls_adapter.teacher_cfg = cls_adapter.task_cfg["teacher"]
    cls_adapter.train_teacher(model)
    assert cls_adapter.evaluate(model)["top1"] > max(before, 30.0)


def test_torchvision_model_by_name(fmnist_root, tmp_path):
    cfg = tiny_cls_config(model=dict(arch="resnet18", num_classes=10, in_channels=3), data=dict(image_size=64),
                          features=None)
    adapter = build_task("cls", cfg=cfg, model_name="r18", data_root=str(fmnist_root), cache_dir=tmp_path,
                         device=torch.device("cpu"))
    assert adapter.split("test").images.shape[1:] == (3, 64, 64)
    # chosen automatically: the last module at each resolution (64 px: 16, 8, 4, 2)
    assert adapter.feature_names == ["layer1", "layer2", "layer3", "layer4"]
    assert adapter.build_model()(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    bad = build_task("cls", cfg=tiny_cls_config(model=dict(arch="nonet")), model_name="x",
                     data_root=str(fmnist_root), cache_dir=tmp_path, device=torch.device("cpu"))
    with pytest.raises(UserError, match="unknown classification model"):
        bad.build_model()


def test_official_zaq_checkpoint_classifier_key_is_mapped(cls_adapter):
    """The official ZAQ code's ResNet-20 calls the classifier ``linear``; it loads into ``fc``."""
    import torch

    source = cls_adapter.build_model()
    state = {(k.replace("fc.", "linear.", 1) if k.startswith("fc.") else k): v for k, v in source.state_dict().items()}
    target = cls_adapter.build_model()
    cls_adapter.load_state_dict(target, state)
    assert torch.equal(target.fc.weight, source.fc.weight)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
