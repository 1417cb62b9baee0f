"""Container images for Ray on HPC: recipes, Dockerfile rendering, builds and the stand-in base."""

from common import PROJECT_ROOT

RECIPES_DIR = PROJECT_ROOT / "recipes"
