"""The README opens with the two commands a newcomer runs, and CI runs exactly the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_blocks():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [code_blocks()[1]]
    assert "pytest" in ci_lines[0]


def test_main_command_makes_tiny_models_and_runs_an_example_workflow():
    main = code_blocks()[0]
    assert "make-tiny ./tiny-models" in main
    workflow = re.search(r"wanrt run (\S+\.json)", main).group(1)
    assert (ROOT / workflow).is_file()
