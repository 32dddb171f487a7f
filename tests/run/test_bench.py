import tasks  # noqa: F401 - registers the adapters
import zaqbench.methods  # noqa: F401 - registers the methods
from zaqbench.run.bench import main


def test_profile_prints_the_parts_of_one_step_of_the_method_asked_for(capsys):
    assert main(["--model", "resnet20", "--method", "zaq-official", "--batch-size", "2", "--q-steps", "1",
                 "--warmup", "0", "--profile", "--cfg-options", "methods.zaq-official.relation_guard=clamp"]) == 0
    out = capsys.readouterr().out
    assert "method=zaq-official batch=2 q_steps=1" in out
    assert "| relation maps, spatial (HW x HW) |" in out and "| generator |" in out and "| **step" in out
