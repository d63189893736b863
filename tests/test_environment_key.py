"""The book's execution cache is keyed on the installed versions (scripts/environment_key.py)."""
# scripts/ is importable: pytest's pythonpath (pyproject.toml)
from environment_key import environment_key, installed

PINNED = [("torch", "2.13.0"), ("transformers", "5.24.0"), ("datasets", "5.2.0")]


def test_a_version_bump_changes_the_key():
    bumped = [("torch", "2.13.0"), ("transformers", "5.25.0"), ("datasets", "5.2.0")]
    assert environment_key(PINNED, "3.11") != environment_key(bumped, "3.11")
    assert environment_key(PINNED, "3.11") != environment_key(PINNED, "3.12")


def test_the_key_ignores_order_and_case():
    assert environment_key(PINNED, "3.11") == environment_key(reversed(PINNED), "3.11")
    assert environment_key(PINNED, "3.11") == environment_key([(n.upper(), v) for n, v in PINNED], "3.11")
    assert len(environment_key(PINNED, "3.11")) == 16


def test_this_environment_has_torch_in_its_key():
    names = {name.lower() for name, _ in installed()}
    assert {"torch", "transformers", "course-utils"} <= names
