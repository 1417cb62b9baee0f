"""Container images for Ray on HPC: recipes, Dockerfile rendering, builds and the stand-in base."""
