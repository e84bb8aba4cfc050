"""The project's promises about itself: README's commands are the ones CI runs, and the
demo command works."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_readme_test_command():
    commands = _readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_pins_torch_in_both_setup_commands():
    commands = _readme_commands()[:2]
    assert len(commands) == 2 and all("pip install torch==2.13.0" in c for c in commands)
    assert "gatedrnn demo" in commands[0]


def test_command_without_subcommand_shows_help_and_exits_2():
    result = subprocess.run([sys.executable, "-m", "gatedrnn.cli"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage: gatedrnn" in result.stdout


def test_every_preset_is_a_valid_config_whose_task_options_exist():
    from gatedrnn.presets import PRESETS
    from gatedrnn.tasks import TASKS
    from gatedrnn.train import TrainConfig

    for name, preset in PRESETS.items():
        config = TrainConfig.from_dict(preset)
        config.validate()
        unknown = set(config.extra) - set(TASKS[config.task].options)
        assert not unknown, f"preset {name}: {sorted(unknown)} are not options of the {config.task} task"


def test_every_subcommand_prints_its_help():
    from gatedrnn.cli import main

    for command in ("demo", "train", "evaluate", "generate", "predict", "report", "presets", "export", "explore",
                    "convert"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0, command
