"""Old import path of the extension app and the HeavyAI settings: see ``keepalive_jupyter``."""

from keepalive_jupyter.extension import KeepaliveJupyterExtension
from keepalive_jupyter.heavyai import HeavyAIConfig

#: The app's name before it served more than the HeavyAI handoff.
HeavyAIExtension = KeepaliveJupyterExtension

__all__ = ["HeavyAIConfig", "HeavyAIExtension", "KeepaliveJupyterExtension"]
