"""The viewer: xpra's HTML5 client behind keepalive's own authentication."""
