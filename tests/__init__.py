"""The project's tests."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout
