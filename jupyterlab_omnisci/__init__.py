"""The OmniSci-era name of keepalive's Jupyter server extension (``keepalive_jupyter``).

Deployments set up from the OmniSci documents enable ``jupyterlab_omnisci.serverextension``;
that keeps working, and does nothing more than ``keepalive_jupyter`` itself, which is enabled on
install.
"""
