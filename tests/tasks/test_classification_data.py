"""ImageFolder data as users bring it: streamed, folders mapped onto the model's class indices,
class-balanced evaluation subsets, and every damaged layout caught up front with one line."""
import json

import pytest
import torch

import tasks  # noqa: F401 - registers the adapters
from tasks import imagefolder
from tests.colour_model import WNIDS, make_imagefolder
from tests.conftest import tiny_cls_config
from zaqbench.errors import UserError
from zaqbench.registry import build_task


def colour_adapter(root, tmp_path, class_map="imagenet", num_classes=1000, **task):
    task = {"eval": dict(batch_size=5, workers=0), **task}
    cfg = tiny_cls_config(model=dict(arch="colour_net", num_classes=num_classes, in_channels=3),
                          data=dict(image_size=16, class_map=class_map), features=None, **task)
    return build_task("cls", cfg=cfg, model_name="colour", data_root=str(root), cache_dir=tmp_path / "cache",
                      device=torch.device("cpu"))


def test_wordnet_folders_map_to_imagenet_indices_and_stream(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    adapter = colour_adapter(root, tmp_path)
    adapter.check()
    model = adapter.build_model()
    assert adapter.evaluate(model) == {"top1": 100.0}
    assert adapter.fp_warning({"top1": 100.0}) is None
    assert adapter.input_spec.mean == (0.485, 0.456, 0.406)
    # numbered 0..K-1 as torchvision's ImageFolder would, the same model scores 0 % and the run warns
    mapping = tmp_path / "wrong.json"
    mapping.write_text(json.dumps({w: 10 + i for i, w in enumerate(WNIDS)}))
    wrong = colour_adapter(root, tmp_path, class_map=str(mapping))
    wrong.check()
    metrics = wrong.evaluate(model)
    assert metrics == {"top1": 0.0}
    assert "chance level" in wrong.fp_warning(metrics) and "task.data.class_map" in wrong.fp_warning(metrics)


def test_subset_of_imagenet_classes_without_a_map_is_an_error_before_any_work(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    with pytest.raises(UserError, match="3 class folders but the model has 1000 classes"):
        colour_adapter(root, tmp_path, class_map=None).check()


def test_max_samples_is_a_balanced_subset_of_the_eval_split_only(tmp_path, monkeypatch):
    root = make_imagefolder(tmp_path / "imgs", per_class=4)
    adapter = colour_adapter(root, tmp_path, eval=dict(batch_size=4, max_samples=6, workers=0))
    adapter.check()
    seen = []
    model = adapter.build_model()
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    assert adapter.evaluate(model)["top1"] == 100.0
    assert sum(seen) == 6
    keep = adapter._eval_indices(adapter._folder("test").labels)
    assert sorted(adapter._folder("test").labels[i] for i in keep) == [0, 0, 1, 1, 2, 2]
    # real-ptq draws its batches at random from train/ and decodes only those files
    decoded = []
    original = imagefolder.ImageFiles.__getitem__
    monkeypatch.setattr(imagefolder.ImageFiles, "__getitem__", lambda self, i: decoded.append(i) or original(self, i))
    batches = list(adapter.real_batches(batch_size=2, num_batches=2, seed=0))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 16, 16)] * 2 and len(decoded) == 4
    assert sorted(set(decoded)) != sorted(set(list(range(4))))  # not simply the first files


def test_balanced_subset_is_seeded_and_balanced():
    labels = [0] * 10 + [1] * 3 + [2] * 7
    a = imagefolder.balanced_subset(labels, 8, seed=0)
    assert imagefolder.balanced_subset(labels, 8, seed=0) == a != imagefolder.balanced_subset(labels, 8, seed=1)
    counts = [sum(labels[i] == k for i in a) for k in range(3)]
    assert sorted(counts) == [2, 3, 3] and a == sorted(a)


def test_non_image_files_are_skipped_with_a_count(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "imgs", per_class=2)
    (root / "val" / WNIDS[0] / "notes.txt").write_text("not an image")
    (root / "val" / WNIDS[1] / "labels.csv").write_text("x")
    adapter = colour_adapter(root, tmp_path)
    adapter.check()
    assert "skipped 2 non-image file(s)" in capsys.readouterr().err
    assert adapter.evaluate(adapter.build_model()) == {"top1": 100.0}


def test_undecodable_image_is_one_line_from_a_worker(tmp_path, monkeypatch):
    from zaqbench import devices

    monkeypatch.setattr(devices, "usable_cores", lambda: 4)  # a machine where the worker starts
    root = make_imagefolder(tmp_path / "imgs", per_class=2)
    data = (root / "val" / WNIDS[2] / "0.png").read_bytes()
    (root / "val" / WNIDS[2] / "0.png").write_bytes(data[:len(data) // 3])
    adapter = colour_adapter(root, tmp_path, eval=dict(batch_size=5, workers=1))
    adapter.check()  # headers only: the damage shows when the file is decoded
    with pytest.raises(UserError) as err:
        adapter.evaluate(adapter.build_model())
    assert str(err.value).startswith("cannot decode image") and "\n" not in str(err.value)
    assert "0.png" in str(err.value)


@pytest.mark.slow
def test_features_are_checked_and_printed(tmp_path, capsys, fmnist_root):
    adapter = build_task("cls", cfg=tiny_cls_config(features=["layer1", "nope"]), model_name="x",
                         data_root=str(fmnist_root), cache_dir=tmp_path, device=torch.device("cpu"))
    with pytest.raises(UserError, match=r"feature module\(s\) \['nope'\] not found"):
        adapter.check()
    auto = build_task("cls", cfg=tiny_cls_config(features=None), model_name="x",
                      data_root=str(fmnist_root), cache_dir=tmp_path, device=torch.device("cpu"))
    auto.check()
    assert "layer1 (16x16), layer2 (8x8), layer3 (4x4)" in capsys.readouterr().err
    assert auto.feature_names == ["layer1", "layer2", "layer3"]


@pytest.mark.parametrize("options, message", [
    (dict(data=dict(image_size=16, clas_map="imagenet")), "unknown field(s) task.data.clas_map"),
    (dict(eval=dict(batch_size=0)), "task.eval.batch_size=0 is not valid; use a positive integer"),
    (dict(eval=dict(workers=-1)), "task.eval.workers must be a non-negative integer"),
    (dict(model=dict(arch="resnet20", num_classes=10, in_channels=1, width=4, depth=3)), "task.model.depth"),
    (dict(widht=4), "unknown task field(s) task.widht"),
])
def test_bad_task_fields(tmp_path, fmnist_root, options, message):
    adapter = build_task("cls", cfg=tiny_cls_config(**options), model_name="x", data_root=str(fmnist_root),
                         cache_dir=tmp_path, device=torch.device("cpu"))
    with pytest.raises(UserError) as err:
        adapter.check()
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["resnet18_imagenet", "mobilenet_v2_imagenet"])
def test_imagenet_configs_features_are_the_automatic_choice(name, tmp_path, capsys):
    from mmengine.config import Config

    from tests.conftest import ROOT

    cfg = Config.fromfile(str(ROOT / "configs" / "cls" / f"{name}.py"))
    root = make_imagefolder(tmp_path / "imgs", per_class=1, size=(300, 260))
    adapter = build_task("cls", cfg=cfg, model_name=name, data_root=str(root), cache_dir=tmp_path,
                         device=torch.device("cpu"))
    adapter.check()
    assert adapter.input_spec.shape(1) == (1, 3, 224, 224)
    batch, labels = next(iter(imagefolder.loader(adapter._image_files("test"), None, 3, 0)))
    assert batch.shape == (3, 3, 224, 224) and labels.tolist() == [0, 1, 2]
    explicit = list(cfg.task.features)
    cfg.task.features = None
    auto = build_task("cls", cfg=cfg, model_name=name, data_root=str(root), cache_dir=tmp_path,
                      device=torch.device("cpu"))
    auto.check()
    assert auto.feature_names == explicit
    assert auto.model_label == name  # the config's own architecture: no suffix


@pytest.mark.parametrize("cores, started", [(2, 0), (4, 3), (16, 4)])
def test_loader_workers_follow_the_cores(tmp_path, monkeypatch, cores, started):
    """task.eval.workers asks (4 here; the teacher falls back to it); the cores this process has decide."""
    from zaqbench import devices

    monkeypatch.setattr(devices, "usable_cores", lambda: cores)
    adapter = colour_adapter(make_imagefolder(tmp_path / "imgs", per_class=1), tmp_path,
                             eval=dict(batch_size=5, workers=4))
    assert adapter._workers("eval") == adapter._workers("teacher") == started
