"""The newest-versions lane's bookkeeping (scripts/newest_lane.py): pins read, drift found."""
# scripts/ is importable: pytest's pythonpath (pyproject.toml)
from newest_lane import differences, pins


def test_pins_are_read_from_the_constraints_file():
    pinned = pins()
    assert pinned["torch"] == "2.13.0" and pinned["transformers"] == "5.24.0"
    assert "course-utils" not in pinned  # the editable line is a comment there


def test_drift_ignores_local_labels_and_unpinned_packages():
    pinned = {"torch": "2.13.0", "platformdirs": "4.14.8", "pandas": "3.1.1"}
    now = {"torch": "2.13.0+cpu", "platformdirs": "4.14.9", "pandas": "3.1.1", "course-utils": "0.1.0"}
    assert differences(pinned, now) == {"platformdirs": ("4.14.8", "4.14.9")}
