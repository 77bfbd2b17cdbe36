/**
 * Keep what is typed on the server as it is typed, so that a kiosk browser that dies between
 * two saves loses none of it (keepalive_jupyter/drafts.py).
 *
 * Every change of a cell's source is sent at once (the changed cells only), and so is the
 * deletion of a cell. A page that opens a notebook first asks for the drafts an earlier page
 * left and puts them back into the cells (a cell that is not there any more is inserted after
 * the cell it followed; a cell deleted since the last save is deleted again); its saving then
 * writes them to disk, and the server forgets each draft once a save carries it. Moves of cells
 * and changes of a cell's type are not kept (see keepalive_jupyter/drafts.py).
 *
 * When the Jupyter server itself dies, keys typed since its last answer never reached it, and
 * the page is about to be loaded from a new server (a new port, so a new origin: no browser
 * storage survives that). `window.keepaliveUnsentDrafts()` hands the service every notebook
 * with unsaved changes, as requests for the new server, before it reloads the page; and
 * `window.keepaliveSaveAll()` saves them before the session is stopped on purpose.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { forEachNewNotebookPanel } from './reattach';

/** A cell as the server keeps it; `after` is the id of the cell before it (null: the first). */
export interface IDraftCell {
  id: string;
  cell_type: string;
  source: string;
  after: string | null;
  /** a cell deleted since the last save (the server's answer only; no other field then) */
  deleted?: boolean;
}

/** Chromium refuses a `keepalive` request with a larger body. */
const KEEPALIVE_BODY_LIMIT = 60 * 1024;

function draftsUrl(settings: ServerConnection.ISettings, path?: string): string {
  const url = URLExt.join(settings.baseUrl, 'api', 'keepalive', 'drafts');
  return path === undefined ? url : url + URLExt.objectToQueryString({ path });
}

/** The notebook's cells, in order. */
function cellsOf(model: any): IDraftCell[] {
  const cells: IDraftCell[] = [];
  const list = model?.cells;
  for (let i = 0; list && i < list.length; i++) {
    const cell = list.get(i);
    cells.push({
      id: cell.id,
      cell_type: cell.type,
      source: cell.sharedModel.getSource(),
      after: i > 0 ? list.get(i - 1).id : null
    });
  }
  return cells;
}

/** Puts an earlier page's drafts into the notebook model; true if anything changed. */
export function applyDrafts(model: any, drafts: IDraftCell[]): boolean {
  let changed = false;
  const indexOf = (id: string | null): number => {
    for (let i = 0; id !== null && i < model.cells.length; i++) {
      if (model.cells.get(i).id === id) {
        return i;
      }
    }
    return -1;
  };
  for (const draft of drafts) {
    const index = indexOf(draft.id);
    if (draft.deleted) {
      if (index >= 0) {
        model.sharedModel.deleteCell(index);
        changed = true;
      }
      continue;
    }
    if (index >= 0) {
      const cell = model.cells.get(index);
      if (cell.sharedModel.getSource() !== draft.source) {
        cell.sharedModel.setSource(draft.source);
        changed = true;
      }
      continue;
    }
    // A cell made after the last save: after the cell it followed (first, or last if that one went).
    const after = indexOf(draft.after);
    const at = draft.after === null ? 0 : after >= 0 ? after + 1 : model.cells.length;
    model.sharedModel.insertCell(at, { id: draft.id, cell_type: draft.cell_type, source: draft.source });
    changed = true;
  }
  return changed;
}

/** Sends one notebook's changed cells, and puts back what an earlier page left. */
class DraftKeeper {
  constructor(
    readonly panel: any,
    readonly settings: ServerConnection.ISettings
  ) {
    void this.start();
  }

  private async start(): Promise<void> {
    const context = this.panel.context;
    await context.ready;
    if (this.panel.isDisposed) {
      return;
    }
    // Typed before this keeper started (it looks for new notebooks once a second): send it all.
    const typedAlready = context.model.dirty;
    try {
      const response = await ServerConnection.makeRequest(
        draftsUrl(this.settings, context.path),
        {},
        this.settings
      );
      if (response.ok && !this.panel.isDisposed) {
        const drafts = ((await response.json()).cells ?? []) as IDraftCell[];
        if (drafts.length && applyDrafts(context.model, drafts)) {
          console.info(`keepalive: put back ${drafts.length} unsaved cell(s) of ${context.path}`);
        }
      }
    } catch (error) {
      console.warn('keepalive: could not fetch unsaved cells', error);
    }
    if (this.panel.isDisposed) {
      return;
    }
    if (!typedAlready) {
      // What the page has now is the file plus the drafts the server has: send what changes.
      for (const cell of cellsOf(context.model)) {
        this.sent.set(cell.id, cell);
      }
    }
    context.model.contentChanged.connect(this.onChange, this);
    this.panel.disposed.connect(() => this.closed());
    this.onChange();
  }

  /** Any change (outputs too): look once the current task is done, for source changes. */
  private onChange(): void {
    if (!this.looking) {
      this.looking = true;
      void Promise.resolve().then(() => {
        this.looking = false;
        this.send();
      });
    }
  }

  /**
   * Send the cells changed since the last send, at once: a request still under way must not
   * hold the newest keys back (the browser may die any moment). The server keeps the newest of
   * each page's requests by their sequence number.
   */
  private send(): void {
    const context = this.panel.context;
    if (this.panel.isDisposed || !context.model) {
      return;
    }
    const cells = cellsOf(context.model);
    const changed = cells.filter(cell => {
      const sent = this.sent.get(cell.id);
      return !sent || sent.source !== cell.source || sent.after !== cell.after;
    });
    // Cells the server knows of (sent, or in the notebook when this keeper started) that are gone.
    const present = new Set(cells.map(cell => cell.id));
    for (const id of this.sent.keys()) {
      if (!present.has(id)) {
        this.sent.delete(id); // back (an undo): sent again as a change
        this.deleted.add(id);
      }
    }
    const deleted = [...this.deleted].filter(id => !present.has(id));
    this.deleted.clear();
    if (!changed.length && !deleted.length) {
      return;
    }
    for (const cell of changed) {
      this.sent.set(cell.id, cell);
    }
    const body = JSON.stringify({
      path: context.path,
      base: context.contentsModel?.last_modified ?? null,
      page: this.page,
      seq: ++this.seq,
      cells: changed,
      deleted
    });
    const failed = (error: unknown) => {
      console.warn('keepalive: could not keep unsaved cells', error);
      for (const cell of changed) {
        if (this.sent.get(cell.id) === cell) {
          this.sent.delete(cell.id); // sent again with the next change
        }
      }
      for (const id of deleted) {
        this.deleted.add(id); // sent again with the next change, unless the cell is back
      }
    };
    ServerConnection.makeRequest(
      draftsUrl(this.settings),
      // keepalive: a reload must not cut the last change off
      { method: 'POST', body, keepalive: body.length < KEEPALIVE_BODY_LIMIT },
      this.settings
    ).then(response => {
      if (!response.ok) {
        failed(response.status);
      }
    }, failed);
  }

  /**
   * The whole notebook as a drafts request, if it has unsaved changes: every cell as on screen
   * (one the server has already is harmless) and every cell deleted since the last save.
   *
   * Without a `base`: the server that died may have written a save whose answer never came, so
   * the page's idea of the file's version can be behind the file; drafts with that base would
   * be dropped as if the file had been changed behind the page's back. What is on screen is
   * what the user has: it applies to the file as it is.
   */
  pending(): object | null {
    const context = this.panel.context;
    if (this.panel.isDisposed || !context.model || !context.model.dirty) {
      return null;
    }
    const cells = cellsOf(context.model);
    const present = new Set(cells.map(cell => cell.id));
    const deleted = [...new Set([...this.deleted, ...this.sent.keys()])].filter(id => !present.has(id));
    return { path: context.path, base: null, page: this.page, seq: ++this.seq, cells, deleted };
  }

  /** Save the notebook if it has unsaved changes; whether it did. */
  async saveIfDirty(): Promise<boolean> {
    const context = this.panel.context;
    if (this.panel.isDisposed || !context.model || !context.model.dirty) {
      return false;
    }
    await context.save();
    return true;
  }

  /** The notebook was closed on purpose: what the user decided there stands. */
  private closed(): void {
    void ServerConnection.makeRequest(
      draftsUrl(this.settings, this.panel.context.path),
      { method: 'DELETE' },
      this.settings
    ).catch(() => undefined);
  }

  private sent = new Map<string, IDraftCell>();
  /** Cells deleted and not yet told to the server (its request failed). */
  private deleted = new Set<string>();
  private looking = false;
  /** This page's requests, in the order they were made (requests may overtake each other). */
  private readonly page = Math.random().toString(36).slice(2);
  private seq = 0;
}

/** Watches the main area for notebook panels and keeps each one's unsaved cells. */
export function startKeepingDrafts(app: JupyterFrontEnd): void {
  const settings = app.serviceManager.serverSettings;
  const keepers = new Set<DraftKeeper>();
  forEachNewNotebookPanel(app, panel => {
    const keeper = new DraftKeeper(panel, settings);
    keepers.add(keeper);
    panel.disposed.connect(() => keepers.delete(keeper));
  });
  (window as any).keepaliveUnsentDrafts = (): object[] =>
    [...keepers].map(keeper => keeper.pending()).filter(request => request !== null) as object[];
  // The session is being stopped (DELETE): what the user typed goes into the home's files, as
  // JupyterLab's own autosave would have put it there. Resolves to how many notebooks it saved.
  (window as any).keepaliveSaveAll = async (): Promise<number> =>
    (await Promise.all([...keepers].map(keeper => keeper.saveIfDirty()))).filter(Boolean).length;
}
