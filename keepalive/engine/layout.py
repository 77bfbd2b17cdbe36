"""Where everything of one session lives, and the environment that keeps it there."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keepalive.engine.users import SessionUser, give

#: Set in the environment of every child of a session: lets the reaper find each
#: descendant, including the ones that re-parent themselves (chrome_crashpad_handler).
#: Not named KEEPALIVE_*: a notebook sees it, and nothing of the service's own settings may show there.
SESSION_MARKER = "KA_SESSION_ID"

#: What a session's children inherit from the service's own environment; nothing else passes.
#: The service's environment may hold its API token, an external Jupyter's token and whatever
#: the operator's shell had: a notebook can read every variable its kernel inherits.
INHERITED_VARIABLES = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR",
    # a notebook's pip and requests need the site's proxy, if it has one
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
})


def inherited(environ: dict[str, str]) -> dict[str, str]:
    """The allow-listed part of ``environ`` (INHERITED_VARIABLES and the ``LC_*`` locale)."""
    return {k: v for k, v in environ.items() if k in INHERITED_VARIABLES or k.startswith("LC_")}


XDG_HOMES = {
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_CACHE_HOME": "cache",
    "XDG_STATE_HOME": "state",
}


@dataclass(frozen=True)
class SessionLayout:
    """A session's two folders.

    ``folder`` is the running session's (``STATE_DIR/sessions/<id>``): sockets, logs, the
    live browser profile, secrets; it goes when the session stops. ``home_folder`` is the
    session name's home (``STATE_DIR/homes/<name>``): notebooks, HOME with JupyterLab's
    workspaces and settings, the XDG dirs, the saved browser profile; it outlives the session,
    and the next session of that name opens it again. Without one, all is in ``folder``.
    """

    folder: Path
    home_folder: Path | None = None

    @property
    def kept(self) -> Path:
        """Where what outlives the session lives."""
        return self.home_folder or self.folder

    @property
    def home(self) -> Path:
        return self.kept / "home"

    @property
    def saved_profile(self) -> Path:
        """The browser profile as saved when the session last stopped (a tarball)."""
        return self.kept / "profile.tar.gz"

    @property
    def previous_profile(self) -> Path:
        """The save before that: taken when the last one is found damaged."""
        return self.kept / "profile.previous.tar.gz"

    @property
    def jupyter_token_file(self) -> Path:
        return self.folder / "jupyter.token"

    @property
    def runtime_dir(self) -> Path:
        return self.folder / "run"

    @property
    def cdp_socket(self) -> Path:
        """Where the session's CDP bridge serves its browser (in the 0700 run dir)."""
        return self.runtime_dir / "cdp.sock"

    @property
    def profile_dir(self) -> Path:
        return self.folder / "profile"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def record_file(self) -> Path:
        return self.folder / "session.json"

    @property
    def heavyai_session_file(self) -> Path:
        return self.folder / "heavyai-session.json"

    @property
    def webhook_url_file(self) -> Path:
        """The session's webhook URL (a secret: root's 0600, like the record)."""
        return self.folder / "webhook-url"

    @property
    def xpra_password_file(self) -> Path:
        return self.folder / "xpra.password"

    @property
    def xpra_conf_dir(self) -> Path:
        return self.folder / "xpra-conf"

    @property
    def xauthority(self) -> Path:
        return self.runtime_dir / "Xauthority"  # the display's cookie (keepalive.engine.xauth)

    @property
    def lab_app_settings_dir(self) -> Path:
        """JupyterLab's app settings (``overrides.json``: keepalive's defaults), the service's own."""
        return self.folder / "lab-settings"

    @property
    def home_link(self) -> Path:
        """How a session started for the warm pool reaches its home: a symlink in its folder.

        Its Jupyter server and browser start before anyone knows whose the session will be, so
        every path they hold goes through this link, which first points at ``pool_home`` and,
        once a user takes the session, at the user's own home (keepalive.engine.pool).
        """
        return self.folder / "home-link"

    @property
    def pool_home(self) -> Path:
        """A pooled session's home until someone takes it: nobody's, and empty."""
        return self.folder / "pool-home"

    @property
    def notebooks_dir(self) -> Path:
        return self.kept / "notebooks"

    def log(self, part: str) -> Path:
        return self.logs_dir / f"{part}.log"

    def create(self, user: SessionUser | None = None, give_home: bool = False) -> None:
        """Make the folder tree; private, since it holds tokens and profiles. The home may
        exist already: a session of the same name had it before.

        With a session ``user`` (the service is root): the session folder stays the service's
        (0711: the user passes through, lists nothing, replaces nothing: the service writes its
        token, logs and record there); the run dir, the browser profile and the home are the
        user's. ``give_home``: the home is new, or was someone else's: all of it goes to the user.
        Root never creates anything deeper than one level inside a home the user already owns,
        where a planted symlink could send it elsewhere.
        """
        self.folder.mkdir(parents=True, mode=0o711 if user else 0o700)
        os.chmod(self.folder, 0o711 if user else 0o700)
        self.logs_dir.mkdir(mode=0o700, exist_ok=True)
        for sub in (self.runtime_dir, self.profile_dir):
            sub.mkdir(mode=0o700, exist_ok=True)
            os.chmod(sub, 0o700)  # XDG spec: the runtime dir must be 0700
            if user:
                os.lchown(sub, user.uid, user.gid)
        self.create_home(user, give_home)

    def create_home(self, user: SessionUser | None = None, give_home: bool = False) -> None:
        """The home's part of ``create``: what is missing of it, for ``user`` (see there)."""
        home_is_new = not self.kept.exists()
        self.kept.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in (self.home, self.notebooks_dir, *self.xdg_dirs()):
            if not sub.exists() and not sub.is_symlink():
                sub.mkdir(mode=0o700)
                if user and not (give_home or home_is_new):
                    os.lchown(sub, user.uid, user.gid)
        if user and (give_home or home_is_new):
            give(self.kept, user)

    def xdg_dirs(self) -> list[Path]:
        return [self.kept / sub for sub in XDG_HOMES.values()]

    def environment(
        self, session_id: str, base: dict[str, str] | None = None, user: SessionUser | None = None
    ) -> dict[str, str]:
        """The environment for every child: an allow-list of the service's own (``base``,
        default ``os.environ``), then HOME and all XDG dirs inside the session folder.

        Nothing else of the service's passes: not its settings or tokens (``KEEPALIVE_*``), not
        its display or desktop session.
        """
        env = inherited(dict(os.environ if base is None else base))
        env.update({name: str(self.kept / sub) for name, sub in XDG_HOMES.items()})
        env["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        env["HOME"] = str(self.home)
        env["XAUTHORITY"] = str(self.xauthority)
        env[SESSION_MARKER] = session_id
        if user is not None:  # the service's own name (root) would mislead whoever asks
            env["USER"] = env["LOGNAME"] = user.name
        return env


def mirror_folders(source: Path, target: Path, user: SessionUser | None = None) -> None:
    """Make, empty, every folder below ``source`` that ``target`` lacks, for ``user``.

    A Jupyter server creates some folders once, at start (``data/jupyter`` for its notebook
    signatures), and fails later when they are missing. A pool session's server started on
    the pool's home; the user's home it is then pointed at needs those folders too.
    ``target`` may be a home its user wrote into before: no symlink in it is ever followed.
    """
    for folder, dirs, _ in os.walk(source):
        below = Path(folder).relative_to(source)
        for name in dirs:
            _make_folder_below(target, below / name, user)


def _make_folder_below(top: Path, relative: Path, user: SessionUser | None) -> None:
    """``top / relative``, made a component at a time below an open folder (no symlink followed)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(top, flags)
    try:
        for part in relative.parts:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, flags, dir_fd=fd)
                if user is not None:
                    os.fchown(child, user.uid, user.gid)
            except OSError:  # a file or a symlink where a folder was expected: leave it be
                return
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
