"""What both packages (containers, launcher) and tasks.py share: the project's root, the one
user-facing error type, and the YAML data-file helpers."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
