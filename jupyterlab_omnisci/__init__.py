"""The OmniSci-era name of keepalive's HeavyAI server extension (``server_ext``).

Deployments set up from the OmniSci documents enable ``jupyterlab_omnisci.serverextension``;
that keeps working, and does nothing more than ``server_ext`` itself, which is enabled on install.
"""
