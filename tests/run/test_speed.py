import csv
import sys
import textwrap

import pytest

from zaqbench.run.speed import ALIAS, load_official, main

#: a stand-in for a clone of the official code: its API, tiny models, and package __init__ files and a
#: main.py top level that fail when run (the harness must skip them, as it skips visdom and pydot)
FAKE_FILES = {
    "network/__init__.py": "raise ImportError('network/__init__ must not run')\n",
    "network/gan.py": """
        import torch.nn as nn
        class Generator(nn.Module):
            def __init__(self, nz=128, ngf=64, nc=3, img_size=32):
                super().__init__()
                self.l1 = nn.Linear(nz, nc * 4 * 4)
                self.nc = nc
            def forward(self, z):
                return self.l1(z.view(z.shape[0], -1)).view(z.shape[0], self.nc, 4, 4)
        """,
    "network/resnet20.py": """
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.linear = nn.Linear(4 * 16, num_classes)
            def forward(self, x, out_feat=False):
                f = self.conv(x).relu()
                out = self.linear(f.flatten(1))
                return ((f,), out) if out_feat else out
        def ResNet20(num_classes=10):
            return Net(num_classes)
        """,
    "quantization/__init__.py": "raise ImportError('quantization/__init__ must not run')\n",
    "quantization/quantize_model.py": """
        import copy
        from .quant_utils.quant_modules import mark
        def quantize_model(model, args):
            return mark(copy.deepcopy(model), args.weight_bit)
        """,
    "quantization/quant_utils/quant_modules.py": "from .quant_utils import mark\n",
    "quantization/quant_utils/quant_utils.py": """
        def mark(model, bits):
            model.bits = bits
            return model
        """,
    "utils/__init__.py": "raise ImportError('utils/__init__ must not run')\n",
    "utils/loss.py": """
        import torch.nn as nn
        import torch.nn.functional as F
        class SCRM(nn.Module):
            calls = 0
            def __init__(self):
                super().__init__()
                SCRM.calls += 1
            def forward(self, g_s, g_t):
                return sum(F.l1_loss(s, t) for s, t in zip(g_s, g_t))
        """,
    "main.py": """
        import visdom_is_not_installed
        vp = None
        def train(args, p_model, q_model, generator, optimizer, epoch):
            optimizer_Q, optimizer_G = optimizer
            inter_loss = SCRM()
            for i in range(args.epoch_itrs):
                z = torch.randn((args.batch_size, args.nz, 1, 1))
                optimizer_Q.zero_grad()
                fake = generator(z).detach()
                g_p, p_logit = p_model(fake, True)
                g_q, q_logit = q_model(fake, True)
                loss_Q = F.l1_loss(q_logit, p_logit.detach()) + args.alpha * inter_loss(g_q, g_p)
                loss_Q.backward()
                optimizer_Q.step()
                if i % args.log_interval == 0:
                    print('logged', loss_Q.item())
                    vp.add_scalar('Loss_Q', i, loss_Q.item())
        def main():
            raise SystemExit('main() must not run')
        """,
}


@pytest.fixture
def official_code(tmp_path):
    root = tmp_path / "ZAQ-code"
    for name, text in FAKE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_official_modules_and_train_load_without_package_inits_or_main(official_code):
    official = load_official(official_code)
    assert official.resnet20.ResNet20().linear.out_features == 10
    assert official.train.__name__ == "train" and official.train.__code__.co_filename == str(official_code / "main.py")


def test_official_arm_runs_its_train_once_per_iteration_and_rows_are_written(official_code, tmp_path, capsys):
    out = tmp_path / "speed.csv"
    code = main(["--official-code", str(official_code), "--arms", "official", "--batch-sizes", "2,3", "--threads", "1",
                 "--iters", "2", "--repeats", "2", "--warmup", "1", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["batch"], r["block"]) for r in rows] == [("2", "0"), ("2", "1"), ("3", "0"), ("3", "1")]
    assert all(r["arm"] == "official" and float(r["wall_s_per_iter"]) > 0 for r in rows)
    # train() ran once per iteration: (1 warm-up + 2 blocks x 2) per batch size
    assert sys.modules[f"{ALIAS}.utils.loss"].SCRM.calls == 2 * (1 + 2 * 2)
    assert "| 1 | 2 |" in capsys.readouterr().out


def test_relation_map_arms_alternate(tmp_path):
    out = tmp_path / "maps.csv"
    assert main(["--relation-maps", "--map-shape", "4,6,6", "--batch-sizes", "3", "--threads", "1", "--iters", "1",
                 "--repeats", "2", "--warmup", "0", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["arm"] for r in rows] == ["autograd", "chunked", "autograd", "chunked"]
    assert {r["map_shape"] for r in rows} == {"4x6x6"}


@pytest.mark.parametrize("argv, message", [
    (["--arms", "official,ours"], "needs --official-code"),
    (["--official-code", "/nonexistent/ZAQ-code"], "git clone https://github.com/FLHonker/ZAQ-code"),
    (["--arms", "ours,theirs"], "--arms 'ours,theirs' is not valid"),
    (["--arms", "ours", "--batch-sizes", "64,0"], "--batch-sizes '64,0' is not valid"),
    (["--relation-maps", "--map-shape", "16,32"], "give C,H,W"),
    (["--arms", "ours", "--iters", "0"], "--iters 0 is not valid"),
    (["--official-code", "{official}", "--q-steps", "3"], "fixed at 5"),
])
def test_bad_input_is_one_line_and_status_2_before_any_work(argv, message, official_code, tmp_path, capsys):
    out = tmp_path / "speed.csv"
    assert main([a.format(official=official_code) for a in argv] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
def test_ours_arm_times_the_official_math_config(tmp_path):
    import tasks  # noqa: F401 - registers the adapters
    import zaqbench.methods  # noqa: F401 - registers the methods

    out = tmp_path / "speed.csv"
    assert main(["--arms", "ours", "--batch-sizes", "2", "--threads", "1", "--iters", "1", "--repeats", "1",
                 "--warmup", "0", "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["arm"] == "ours" and row["q_steps"] == "5" and float(row["wall_s_per_iter"]) > 0
