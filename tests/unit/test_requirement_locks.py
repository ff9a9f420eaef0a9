"""The AzureML image variant's pinned set stays requirements.lock with only the MLflow pair swapped."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")
# Pins of requirements.lock the variant drops: the full MLflow server package and its tracing package
# (requirements-azureml.in explains why).
DROPPED = {"mlflow", "mlflow-tracing"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not a NAME==VERSION pin: {line!r}"
        name = match.group(1).lower().replace("_", "-")
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def test_azureml_lock_is_the_main_lock_with_the_azureml_pins_on_top():
    main, overrides = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-azureml.in")
    azureml = _pins(ROOT / "requirements-azureml.lock")
    assert "azureml-mlflow" in overrides and "mlflow-skinny" in overrides
    for name, version in overrides.items():
        assert azureml.get(name) == version, f"requirements-azureml.lock: {name} is not {version} (make lock-azureml)"
    for name, version in main.items():
        if name in DROPPED:
            assert name not in azureml, f"requirements-azureml.lock still pins {name}"
        elif name not in overrides:
            assert azureml.get(name) == version, (
                f"requirements-azureml.lock: {name}=={azureml.get(name)} but requirements.lock pins {version}; "
                "regenerate it with make lock-azureml")
    assert azureml["torch"] == main["torch"] == "2.13.0"
