"""Jupyter server extension: hands the HeavyAI database session to JupyterLab."""
