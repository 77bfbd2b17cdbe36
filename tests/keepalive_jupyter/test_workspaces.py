"""Workspaces written whole (keepalive_jupyter/workspaces.py), in the sessions' real Jupyter
environment: jupyterlab_server's own WorkspacesManager, patched as the extension patches it."""

from __future__ import annotations

from tests.keepalive_jupyter.test_lean_jupyterlab import run_in_jupyter_environment


def test_a_save_cut_short_leaves_the_last_whole_workspace(tmp_path):
    out = run_in_jupyter_environment(
        f"""
        import json, os
        from pathlib import Path
        from jupyterlab_server.workspaces_handler import WorkspacesManager
        from keepalive_jupyter import workspaces

        workspaces.install()
        workspaces.install()  # twice: still one patch
        manager = WorkspacesManager(Path({str(tmp_path)!r}) / "workspaces")
        first = json.dumps({{"data": {{"layout": "one"}}, "metadata": {{"id": "default"}}}})
        path = manager.save("default", first)
        print(path.parent.name, path.name.endswith(".jupyterlab-workspace"), path.read_text() == first)

        def killed(*args):  # the server dies after writing the new content, before the rename
            raise SystemExit("killed")

        os.replace, real_replace = killed, os.replace
        try:
            manager.save("default", json.dumps({{"data": {{"layout": "two"}}, "metadata": {{"id": "default"}}}}))
        except SystemExit:
            pass
        os.replace = real_replace
        print(path.read_text() == first, [p.name for p in path.parent.iterdir()] == [path.name])
        try:
            manager.save("default", json.dumps({{"data": {{}}, "metadata": {{"id": "other"}}}}))
        except ValueError as error:
            print("refused:", error)
        """
    )
    assert out.splitlines() == [
        "workspaces True True",
        "True True",  # the old one whole, no scratch file left beside it
        "refused: Workspace metadata ID mismatch: expected 'default' got '/other'",
    ]


def test_the_same_workspace_put_again_is_not_written_again(tmp_path):
    out = run_in_jupyter_environment(
        f"""
        import json, os
        from pathlib import Path
        from jupyterlab_server.workspaces_handler import WorkspacesManager
        from keepalive_jupyter import workspaces

        workspaces.install()
        manager = WorkspacesManager(Path({str(tmp_path)!r}) / "workspaces")
        writes = []
        real_replace = os.replace
        os.replace = lambda *args: (writes.append(args), real_replace(*args))
        layout = json.dumps({{"data": {{"layout": "one"}}, "metadata": {{"id": "default"}}}})
        for text in (layout, layout, layout.replace("one", "two")):
            path = manager.save("default", text)
            print(len(writes), path.read_text() == text)
        """
    )
    assert out.splitlines() == ["1 True", "1 True", "2 True"]
