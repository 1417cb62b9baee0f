"""Container images for Ray on HPC: recipes, Dockerfile rendering, builds and the stand-in base."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECIPES_DIR = PROJECT_ROOT / "recipes"
